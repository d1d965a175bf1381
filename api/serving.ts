/**
 * The API's serving mark: while the process is ready (Temporal answers, and the mark itself
 * reaches PostgreSQL), it records every few seconds that it serves (api_serving). The fleet
 * liveness controller treats no mark within its grace as a disruption: a fleet the API cannot
 * hear is not a fleet that died (docs/fleet-liveness.md).
 */
import type { Client } from '@temporalio/client';
import type { Store } from '../db/store.js';

/** How often a ready API process records that it serves; well under the controller's grace (30 s by default). */
export const SERVING_MARK_EVERY_MS = 5_000;
/** How long the readiness check waits for Temporal. */
const TEMPORAL_CHECK_MS = 2_000;

/**
 * Marks this instance as serving now, and every `everyMs` after, while it is ready; a tick that
 * is not ready marks nothing (and says why at debug level). Returns the function that stops it.
 */
export function markServing(
  store: Store,
  client: Client,
  instance: string,
  log: { debug: (fields: object, message: string) => void },
  everyMs = SERVING_MARK_EVERY_MS,
): () => Promise<void> {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let tick: Promise<void> = Promise.resolve();
  const mark = async (): Promise<void> => {
    try {
      await client.withDeadline(Date.now() + TEMPORAL_CHECK_MS, () => client.workflowService.getSystemInfo({}));
      await store.serving.mark(instance);
    } catch (err) {
      log.debug({ err: err instanceof Error ? err.message : String(err) }, 'not ready: no serving mark');
    }
  };
  const schedule = (): void => {
    if (stopped) return;
    timer = setTimeout(() => {
      tick = mark().then(schedule);
    }, everyMs);
  };
  tick = mark().then(schedule);
  return async () => {
    stopped = true;
    clearTimeout(timer);
    await tick;
  };
}
