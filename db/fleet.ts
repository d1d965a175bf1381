/**
 * The fleet at a glance, for the API's metrics (api/metrics.ts): how many live workspaces are in
 * each status (the projection), and how long ago the most silent of them last beat (the
 * heartbeat ledger). One aggregate over both tables, read at most once per scrape interval.
 */
import type pg from 'pg';

export interface StatusSummary {
  status: string;
  workspaces: number;
  /** Seconds since the oldest last heartbeat among them; null when none of them has beaten. */
  oldestHeartbeatAgeSeconds: number | null;
}

export async function fleetByStatus(pool: pg.Pool): Promise<StatusSummary[]> {
  const { rows } = await pool.query<{ status: string; workspaces: number; oldest: number | null }>(
    `SELECT w.status, count(*)::int AS workspaces,
            extract(epoch FROM now() - min(h.last_seen_at))::float8 AS oldest
     FROM workspaces w LEFT JOIN workspace_heartbeats h ON h.workspace_id = w.id
     WHERE w.removed_at IS NULL AND w.status <> 'removed'
     GROUP BY w.status`,
  );
  return rows.map((row) => ({
    status: row.status,
    workspaces: row.workspaces,
    oldestHeartbeatAgeSeconds: row.oldest === null ? null : Math.max(0, row.oldest),
  }));
}
