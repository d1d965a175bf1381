/**
 * Cordon: an operator holds one workspace. While cordoned nothing automatic restarts it (a dead
 * verdict, the watchdog, a reconcile's delivery, a retry) or delivers to it (a reconcile pass);
 * verdicts are still made and shown. What was held (one restart, one pass in the deepest mode
 * asked) runs once on uncordon. The operator's own restarts and reconcile requests still run.
 */
import { merged, refused, started, type Draft } from './draft.js';
import { releaseHeldReconcile } from './reconcile.js';
import { holdOf } from './restart.js';
import type { CommandAnswer } from './types.js';

export function onCordon(draft: Draft, reason: string, requester: string): CommandAnswer {
  const state = draft.state;
  if (state.status === 'removed') return refused('the workspace is removed');
  if (draft.external) return refused('the runtime is external: the service neither restarts nor delivers to it');
  if (state.cordon !== null) return merged(`already cordoned by ${state.cordon.requester} since ${state.cordon.since}`);
  state.cordon = { since: draft.at, reason, requester };
  return started('cordoned: automatic restarts and plugin deliveries are held until uncordon');
}

/** The hold ends: the held pass starts (or follows the running one); the held restart starts at the step's end. */
export function onUncordon(draft: Draft): CommandAnswer {
  const state = draft.state;
  if (state.status === 'removed') return refused('the workspace is removed');
  if (state.cordon === null) return merged('not cordoned');
  state.cordon = null;
  const released: string[] = [];
  const held = state.restart.held;
  if (held !== null) {
    // Released at the step's end, unless a crash-loop backoff or a drain still holds it.
    const still = holdOf(state, held, draft.now, draft.config);
    released.push(`restart (${held.reason})${still === null ? '' : `, still held by ${still}`}`);
  }
  const mode = releaseHeldReconcile(draft);
  if (mode !== null) released.push(`a ${mode} reconcile pass`);
  return started(
    released.length === 0 ? 'uncordoned: nothing was held' : `uncordoned; released: ${released.join(', ')}`,
  );
}
