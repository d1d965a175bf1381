/**
 * The `workspaces` table: a workspace's row from its creation to its removal, and the projection
 * of its workflow's state (status, URL, delivery mode) written on transitions for SQL readers.
 * Temporal holds the live state; a projection write lands only when it is newer than the row.
 */
import type pg from 'pg';
import type { DeliveryMode } from '../../workflows/payloads.js';
import type { LivenessContract } from '../../workflows/state-machine.js';
import type { DeclaredPlugin } from './declared-plugins.js';
import type { StoredToken } from './tokens.js';

export interface Projection {
  workspaceId: string;
  status: string;
  url: string | null;
  statusSince: string;
  /** The workflow's count of projection writes: only a newer version overwrites the row. */
  version: number;
  /** Absent (runs from before it was projected) or null (not registered yet): the row keeps its own. */
  deliveryMode?: DeliveryMode | null;
  /** The status changes this write reports, in order: each becomes an event of the outbox. */
  transitions?: StatusTransition[];
}

/** One status change as the workflow made it (the state machine's StatusChange). */
export interface StatusTransition {
  from: string;
  to: string;
  cause: string;
  at: string;
}

/** Live workspaces in one status, for the API's fleet gauges (api/metrics.ts). */
export interface StatusSummary {
  status: string;
  workspaces: number;
  /** Seconds since the oldest last heartbeat among them; null when none of them has beaten. */
  oldestHeartbeatAgeSeconds: number | null;
  /** Of them, held by an operator; crash-looping. */
  cordoned: number;
  crashLooping: number;
}

/**
 * A projection write with the liveness contract it publishes (one statement): times cross as
 * ages on the workflow's clock, stored as the database's `now()` minus the age.
 */
export interface Publication extends Projection {
  contract: LivenessContract;
  /** Since the last sign of life the workflow itself knows: the lease runs from then. */
  leaseAgeMs: number;
  /** The restart in progress: its key, and how long ago it began. */
  restart: { key: string; ageMs: number } | null;
  /** Cordoned, crash-looping (the fleet's gauges); absent from writes of older builds: kept as stored. */
  holds?: { cordoned: boolean; crashLooping: boolean };
}

/** What every runtime call checks first: whether the workspace is live, its tokens, its delivery mode. */
export interface WorkspaceAccess {
  /** `removed` from the moment the API accepted the removal. */
  status: string;
  liveTokens: number;
  /** As the workflow last projected it; null before the first register (or from older runs). */
  deliveryMode: DeliveryMode | null;
  /** Whether the workflow has written the projection at all (its version is above 0). */
  projected: boolean;
  /** The runtime runs outside the service (created awaiting its agent). */
  external: boolean;
}

export class WorkspacesTable {
  constructor(private readonly pool: pg.Pool) {}

  /**
   * Creates the workspace row, its heartbeat ledger row, its declared plugins and, when given, its
   * first instance token, in one statement: atomic and one round trip. False, and nothing written, when the id is taken.
   * No other token can exist for a row this statement inserts, so the token takes no lock.
   */
  async create(
    workspaceId: string,
    plugins: DeclaredPlugin[],
    external = false,
    token?: StoredToken,
  ): Promise<boolean> {
    const { rows } = await this.pool.query<{ created: number }>(
      `WITH created AS (
         INSERT INTO workspaces (id, external) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING id
       ), declared AS (
         INSERT INTO declared_plugins (workspace_id, plugin_name, source)
         SELECT created.id, p.name, p.source FROM created, unnest($3::text[], $4::text[]) AS p (name, source)
       ), minted AS (
         INSERT INTO workspace_tokens (workspace_id, token_hash, prefix)
         SELECT created.id, $5::bytea, $6::text FROM created WHERE $5::bytea IS NOT NULL
       ), ledger AS (
         INSERT INTO workspace_heartbeats (workspace_id) SELECT created.id FROM created
       )
       SELECT count(*)::int AS created FROM created`,
      [
        workspaceId,
        external,
        plugins.map((plugin) => plugin.name),
        plugins.map((plugin) => plugin.source),
        token?.hash ?? null,
        token?.prefix ?? null,
      ],
    );
    return rows[0]?.created === 1;
  }

  /**
   * Status and live-token count in one round trip: what every runtime call checks first. A
   * workspace whose removal the API accepted reads `removed` at once.
   */
  async access(workspaceId: string): Promise<WorkspaceAccess | null> {
    const { rows } = await this.pool.query<{
      status: string;
      live: string;
      delivery_mode: DeliveryMode | null;
      version: string;
      external: boolean;
    }>(
      `SELECT CASE WHEN w.removed_at IS NULL THEN w.status ELSE 'removed' END AS status, w.delivery_mode, w.version,
              w.external,
              (SELECT count(*) FROM workspace_tokens t WHERE t.workspace_id = w.id AND t.revoked_at IS NULL) AS live
       FROM workspaces w WHERE w.id = $1`,
      [workspaceId],
    );
    const row = rows[0];
    return row
      ? {
          status: row.status,
          liveTokens: Number(row.live),
          deliveryMode: row.delivery_mode,
          projected: Number(row.version) > 0,
          external: row.external,
        }
      : null;
  }

  /** Records that the API accepted the workspace's removal; idempotent. */
  async markRemoved(workspaceId: string): Promise<void> {
    await this.pool.query('UPDATE workspaces SET removed_at = coalesce(removed_at, now()) WHERE id = $1', [
      workspaceId,
    ]);
  }

  /** Every workspace not removed, with who runs its runtime: what recreating their workflows needs. */
  async live(): Promise<{ workspaceId: string; external: boolean }[]> {
    const { rows } = await this.pool.query<{ id: string; external: boolean }>(
      `SELECT id, external FROM workspaces WHERE removed_at IS NULL AND status <> 'removed' ORDER BY id`,
    );
    return rows.map((row) => ({ workspaceId: row.id, external: row.external }));
  }

  async list(status: string | undefined, limit: number): Promise<Projection[]> {
    const { rows } = await this.pool.query<{
      id: string;
      status: string;
      url: string | null;
      status_since: Date;
      version: string;
    }>(
      `SELECT id, status, url, status_since, version FROM workspaces
       WHERE ($1::text IS NULL OR status = $1) ORDER BY id LIMIT $2`,
      [status ?? null, limit],
    );
    return rows.map((row) => ({
      workspaceId: row.id,
      status: row.status,
      url: row.url,
      statusSince: row.status_since.toISOString(),
      version: Number(row.version),
    }));
  }

  /**
   * The projection row and the liveness contract in the ledger row, in one statement: each only
   * from a newer version than it holds, so a retried or late write never regresses either. The
   * lease runs from the database's `now()` minus the workflow's age of its last sign of life;
   * the restart's start is stamped once per restart. The status changes the write reports go
   * into the event outbox in the same statement (db/tables/events.ts); returns how many events
   * it added (none for a retried write).
   */
  async writeProjection(p: Publication): Promise<number> {
    const { contract } = p;
    const { rows } = await this.pool.query<{ added: number }>(
      `WITH projection AS (
         INSERT INTO workspaces (id, status, url, status_since, version, delivery_mode, cordoned, crash_looping)
         VALUES ($1, $2, $3, $4, $5, $6, coalesce($17::boolean, false), coalesce($18::boolean, false))
         ON CONFLICT (id) DO UPDATE
           SET status = EXCLUDED.status, url = EXCLUDED.url, status_since = EXCLUDED.status_since,
               version = EXCLUDED.version, updated_at = now(),
               delivery_mode = coalesce(EXCLUDED.delivery_mode, workspaces.delivery_mode),
               cordoned = coalesce($17::boolean, workspaces.cordoned),
               crash_looping = coalesce($18::boolean, workspaces.crash_looping)
           WHERE workspaces.version < EXCLUDED.version
         RETURNING id
       ), contract AS (
       INSERT INTO workspace_heartbeats AS h (workspace_id, want, want_version, degrade_error_rate, recover_error_rate,
                                              has_card, lease_watched, ttl_ms, lease_since, restart_key, restart_at)
       VALUES ($1, $7, $5, $8, $9, $10, $11, $12, now() - $13 * interval '1 millisecond', $14,
               now() - $15 * interval '1 millisecond')
       ON CONFLICT (workspace_id) DO UPDATE
         SET want = EXCLUDED.want, want_version = EXCLUDED.want_version,
             degrade_error_rate = EXCLUDED.degrade_error_rate, recover_error_rate = EXCLUDED.recover_error_rate,
             has_card = EXCLUDED.has_card, lease_watched = EXCLUDED.lease_watched, ttl_ms = EXCLUDED.ttl_ms,
             lease_since = EXCLUDED.lease_since,
             restart_at = CASE WHEN h.restart_key IS DISTINCT FROM EXCLUDED.restart_key
                               THEN EXCLUDED.restart_at ELSE h.restart_at END,
             restart_key = EXCLUDED.restart_key
         WHERE h.want_version < EXCLUDED.want_version
       RETURNING 1
       )
       SELECT record_status_changes($1, $5, $16::jsonb) AS added`,
      [
        p.workspaceId,
        p.status,
        p.url,
        p.statusSince,
        p.version,
        p.deliveryMode ?? null,
        contract.want,
        contract.degradeErrorRate,
        contract.recoverErrorRate,
        contract.hasCard,
        contract.leaseWatched,
        contract.leaseTtlMs,
        p.leaseAgeMs,
        p.restart?.key ?? null,
        p.restart?.ageMs ?? 0,
        JSON.stringify(p.transitions ?? []),
        p.holds?.cordoned ?? null,
        p.holds?.crashLooping ?? null,
      ],
    );
    return rows[0]?.added ?? 0;
  }

  /**
   * The fleet at a glance: how many live workspaces are in each status (the projection), and how
   * long ago the most silent of them last beat (the heartbeat ledger). One aggregate over both
   * tables; the API reads it at most once per scrape interval.
   */
  async byStatus(): Promise<StatusSummary[]> {
    const { rows } = await this.pool.query<{
      status: string;
      workspaces: number;
      oldest: number | null;
      cordoned: number;
      crash_looping: number;
    }>(
      `SELECT w.status, count(*)::int AS workspaces,
              extract(epoch FROM now() - min(h.last_seen_at))::float8 AS oldest,
              count(*) FILTER (WHERE w.cordoned)::int AS cordoned,
              count(*) FILTER (WHERE w.crash_looping)::int AS crash_looping
       FROM workspaces w LEFT JOIN workspace_heartbeats h ON h.workspace_id = w.id
       WHERE w.removed_at IS NULL AND w.status <> 'removed'
       GROUP BY w.status`,
    );
    return rows.map((row) => ({
      status: row.status,
      workspaces: row.workspaces,
      oldestHeartbeatAgeSeconds: row.oldest === null ? null : Math.max(0, row.oldest),
      cordoned: row.cordoned,
      crashLooping: row.crash_looping,
    }));
  }
}
