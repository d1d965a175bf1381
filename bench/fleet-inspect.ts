/**
 * What the fleet bench reads of the fleet itself, beside its own figures: the projection's
 * statuses, what a lagging workspace's workflow says of itself, what a sample of histories says
 * of the workers, and when the workers poll.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { TASK_QUEUE, stateQuery, workspaceWorkflowId } from '../workflows/definitions.js';
import type { Runtime } from './harness/load.js';
import type { Stack } from './harness/stack.js';
import { percentile, round } from './harness/stats.js';

/** How many of the workspaces whose id starts with `prefix` the projection does not show online, and its statuses. */
export async function notOnline(databaseUrl: string, prefix: string): Promise<{ count: number; statuses: string }> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ status: string; n: string }>(
      `SELECT status, count(*) AS n FROM workspaces WHERE id LIKE $1 GROUP BY status ORDER BY status`,
      [`${prefix}%`],
    );
    const count = rows.filter((row) => row.status !== 'online').reduce((sum, row) => sum + Number(row.n), 0);
    return { count, statuses: rows.map((row) => `${row.status}: ${row.n}`).join(', ') };
  } finally {
    await client.end();
  }
}

/** What the workflows of a few workspaces the projection does not show online say of themselves. */
export async function explainNotOnline(stack: Stack, prefix: string, log: (line: string) => void): Promise<void> {
  const db = new pg.Client({ connectionString: stack.databaseUrl });
  await db.connect();
  let ids: string[];
  try {
    const { rows } = await db.query<{ id: string }>(
      `SELECT id FROM workspaces WHERE id LIKE $1 AND status <> 'online' ORDER BY id LIMIT 3`,
      [`${prefix}%`],
    );
    ids = rows.map((row) => row.id);
  } finally {
    await db.end();
  }
  const client = await stack.temporal();
  for (const id of ids) {
    const handle = client.workflow.getHandle(workspaceWorkflowId(id));
    try {
      const state = await handle.query(stateQuery);
      const pending = (await handle.describe()).raw.pendingActivities ?? [];
      log(
        `  ${id}: the workflow says ${state.status}; registers ${state.counters.registers}, heartbeats ` +
          `${state.counters.heartbeats}, projection writes ${state.counters.projectionWrites}; pending activities: ` +
          (pending.map((a) => `${a.activityType?.name ?? '?'} attempt ${a.attempt ?? '?'}`).join(', ') || 'none'),
      );
    } catch (err) {
      log(`  ${id}: cannot ask its workflow: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
}

/**
 * What a sample of histories says of the workers: workflow tasks on the normal task queue after
 * a run's first (each a sticky-cache miss: the workflow was evicted from its worker's cache, or
 * its worker did not take the sticky task in time, so the next task replayed the history),
 * workflow tasks that failed or timed out, and how long tasks waited to be picked up.
 */
export async function historySample(stack: Stack, runtimes: Runtime[], sample: number): Promise<string> {
  const client = await stack.temporal();
  const step = Math.max(1, Math.floor(runtimes.length / sample));
  let misses = 0;
  let failed = 0;
  let timedOut = 0;
  let tasks = 0;
  let histories = 0;
  const waits: number[] = [];
  const ms = (time: { seconds?: { toNumber(): number } | number | null; nanos?: number | null } | null | undefined) =>
    time
      ? (typeof time.seconds === 'number' ? time.seconds : (time.seconds?.toNumber() ?? 0)) * 1000 +
        (time.nanos ?? 0) / 1e6
      : NaN;
  for (let i = 0; i < runtimes.length && histories < sample; i += step) {
    const runtime = runtimes[i];
    if (runtime === undefined) continue;
    const events = (await client.workflow.getHandle(workspaceWorkflowId(runtime.id)).fetchHistory()).events ?? [];
    const scheduled = events.filter((e) => e.workflowTaskScheduledEventAttributes);
    tasks += scheduled.length;
    misses += scheduled
      .slice(1)
      .filter((e) => e.workflowTaskScheduledEventAttributes?.taskQueue?.name === TASK_QUEUE).length;
    failed += events.filter((e) => e.workflowTaskFailedEventAttributes).length;
    timedOut += events.filter((e) => e.workflowTaskTimedOutEventAttributes).length;
    const scheduledAt = new Map(scheduled.map((e) => [Number(e.eventId), ms(e.eventTime)]));
    for (const e of events) {
      const started = e.workflowTaskStartedEventAttributes;
      if (!started) continue;
      const at = scheduledAt.get(Number(started.scheduledEventId));
      if (at !== undefined) waits.push(ms(e.eventTime) - at);
    }
    histories++;
  }
  return (
    `in ${histories} histories: ${tasks} workflow tasks, ${misses} sticky-cache misses, ${failed} failed, ` +
    `${timedOut} timed out; scheduled-to-started p50 ${round(percentile(waits, 50))} ms, ` +
    `p99 ${round(percentile(waits, 99))} ms, max ${round(Math.max(...waits))} ms`
  );
}

/** Waits until every worker said it polls (it bundled the workflows and connected), then a moment more. */
export async function workersPolling(dir: string, workers: number): Promise<void> {
  const deadline = Date.now() + 120_000;
  const polling = (i: number): boolean => {
    try {
      return readFileSync(join(dir, 'logs', i === 0 ? 'worker.log' : `worker-${i + 1}.log`), 'utf8').includes(
        'worker: polling',
      );
    } catch {
      return false;
    }
  };
  while (!Array.from({ length: workers }, (_, i) => polling(i)).every(Boolean)) {
    if (Date.now() > deadline) throw new Error('the workers did not start polling within 120 s');
    await sleep(200);
  }
  await sleep(2_000);
}
