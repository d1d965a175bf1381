/**
 * Dead boxes among a beating fleet, for the fleet bench: k workspaces' runtimes stop beating at
 * one instant while the rest beat on; the projection says when each went offline. Measured from
 * each one's last acknowledged heartbeat to its verdict.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { HeartbeatLoad, Runtime } from './harness/load.js';
import { countBy, countsText, percentile } from './harness/stats.js';

export interface DeadBoxes {
  silenced: number;
  /** Went offline within the wait. */
  offline: number;
  /** From each one's last acknowledged heartbeat to its verdict, ms. */
  p50Ms: number;
  maxMs: number;
  /** How long the bench waited for the last verdict, s. */
  waitedS: number;
  /** The projection's statuses of the silenced workspaces at the end. */
  statuses: string;
}

/** Statuses of a workspace whose runtime is taken to be alive: leaving them is the verdict. */
const ALIVE = new Set(['online', 'degraded']);

/**
 * Silences `k` workspaces of `fleet`, spread over it, and waits up to `waitMs` for each to leave
 * online. The verdict's time is the projection's `status_since` when it reads offline, else the
 * poll that saw it gone (a status past offline: at most a second late). The last acknowledged
 * heartbeat is when its answer came (the ledger recorded it just before).
 */
export async function deadBoxes(
  databaseUrl: string,
  load: HeartbeatLoad,
  fleet: readonly Runtime[],
  k: number,
  waitMs: number,
  log: (line: string) => void,
): Promise<DeadBoxes> {
  const step = Math.max(1, Math.floor(fleet.length / k));
  const ids = fleet
    .filter((_, i) => i % step === 0)
    .slice(0, k)
    .map((r) => r.id);
  const loadStartedAt = Date.now() - load.now();
  load.silence(ids);
  const silencedAt = Date.now();
  log(
    `dead boxes: ${ids.length} runtimes stopped beating; waiting up to ${Math.round(waitMs / 1000)} s for their verdicts`,
  );
  const verdictAt = new Map<string, number>();
  let statuses = new Map<string, number>();
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    while (verdictAt.size < ids.length && Date.now() - silencedAt < waitMs) {
      await sleep(1_000);
      const { rows } = await client.query<{ id: string; status: string; status_since: Date }>(
        'SELECT id, status, status_since FROM workspaces WHERE id = ANY($1)',
        [ids],
      );
      const polledAt = Date.now();
      for (const row of rows) {
        if (verdictAt.has(row.id) || ALIVE.has(row.status)) continue;
        verdictAt.set(row.id, row.status === 'offline' ? row.status_since.getTime() : polledAt);
      }
      statuses = countBy(rows, (row) => row.status);
    }
  } finally {
    await client.end();
  }
  const lastAck = new Map<string, number>();
  const silenced = new Set(ids);
  for (const a of load.answers) {
    if (a.status !== 200 || !silenced.has(a.workspaceId)) continue;
    lastAck.set(a.workspaceId, Math.max(lastAck.get(a.workspaceId) ?? 0, loadStartedAt + a.at + a.ms));
  }
  const durations = [...verdictAt].map(([id, at]) => at - (lastAck.get(id) ?? silencedAt));
  return {
    silenced: ids.length,
    offline: verdictAt.size,
    p50Ms: percentile(durations, 50),
    maxMs: durations.length === 0 ? NaN : Math.max(...durations),
    waitedS: (Date.now() - silencedAt) / 1000,
    statuses: countsText(statuses),
  };
}
