/**
 * The `workspace_heartbeats` table, the heartbeat ledger: each workspace's lease. The API records
 * every heartbeat here in one statement and forwards to the workflow exactly the heartbeats the
 * liveness contract, published by the workflow with its projection, wants; the fleet liveness
 * controller finds the leases that expired (docs/fleet-liveness.md). Every time is the database's.
 */
import type pg from 'pg';
import type { HeartbeatFacts, HeartbeatWant } from '../../workflows/state-machine.js';

/** What the heartbeat's one statement decided: whether the workflow wants it, and under which contract. */
export interface HeartbeatRecord {
  wanted: boolean;
  wantVersion: number;
}

/** The ledger row as an operator reads it (GET /workspaces/:id). */
export interface HeartbeatLedger {
  /** The last heartbeat recorded; null before any. */
  lastSeenAt: string | null;
  /** Heartbeats recorded. */
  beats: number;
  want: HeartbeatWant;
  wantVersion: number;
  deliveredVersion: number;
  leaseWatched: boolean;
  /** When the lease expires if nothing renews it; null when it is not watched. */
  leaseExpiresAt: string | null;
}

/**
 * The ledger as the workflow reads it (dead detection; a reconcile that asks for a restart): an age
 * and a comparison made by the database, on its clock, and the last heartbeat's active tasks.
 */
export interface LedgerReading {
  /** How long ago the last heartbeat was recorded; null before any. */
  lastSeenAgeMs: number | null;
  /** A heartbeat was recorded after the restart in progress began. */
  seenSinceRestart: boolean;
  /** The active tasks the last heartbeat recorded reported (0 before any). */
  activeTasks: number;
}

/** A lease that expired and was not yet signalled for its contract. */
export interface ExpiredLease {
  workspaceId: string;
  version: number;
  silentForMs: number;
}

export interface ExpiredLeases {
  /** The database's now, the time the sweep was judged at. */
  now: string;
  /** Leases watched now. */
  watched: number;
  /**
   * How long ago an API process last recorded that it serves (api_serving); null when none ever
   * did (no API to suspect).
   */
  servedAgeMs: number | null;
  /** The longest TTL among the watched leases (0 when none is watched): how far back "within one TTL" reaches. */
  maxTtlMs: number;
  /** Expired and not yet signalled, all of them. */
  expired: number;
  /** Up to the limit asked, the longest silent first. */
  leases: ExpiredLease[];
}

export class HeartbeatLedgerTable {
  constructor(private readonly pool: pg.Pool) {}

  /**
   * The heartbeat's one statement: checks the token (a live one of this workspace) and that the
   * workspace is not removed, decides from the published contract whether the workflow wants the
   * heartbeat (heartbeat_wanted), and records it unless it is wanted (a wanted one is recorded
   * once the workflow has it: `delivered`). Null, and nothing recorded, when the token or the
   * workspace does not pass, or the workspace has no ledger row.
   */
  async record(tokenHash: Buffer, workspaceId: string, beat: HeartbeatFacts): Promise<HeartbeatRecord | null> {
    const wanted = `heartbeat_wanted(h.want, h.want_version, h.delivered_version, h.degrade_error_rate,
                                     h.recover_error_rate, h.has_card, $3, $4, $5, $6)`;
    // Named, so each connection parses it once and PostgreSQL can reuse its plan on later heartbeats.
    const { rows } = await this.pool.query<{ wanted: boolean; want_version: string }>({
      name: 'record-heartbeat',
      text: `UPDATE workspace_heartbeats h
          SET last_seen_at = CASE WHEN ${wanted} THEN h.last_seen_at ELSE now() END,
              beats = CASE WHEN ${wanted} THEN h.beats ELSE h.beats + 1 END,
              active_tasks = $7
         FROM workspace_tokens t, workspaces w
        WHERE h.workspace_id = $2 AND t.token_hash = $1 AND t.workspace_id = $2 AND t.revoked_at IS NULL
          AND w.id = $2 AND w.removed_at IS NULL AND w.status <> 'removed'
       RETURNING ${wanted} AS wanted, h.want_version`,
      values: [
        tokenHash,
        workspaceId,
        beat.errorRate,
        beat.runtimeState,
        beat.managesOwnStatus,
        beat.bringsCard,
        beat.activeTasks,
      ],
    });
    const row = rows[0];
    return row ? { wanted: row.wanted, wantVersion: Number(row.want_version) } : null;
  }

  /**
   * A wanted heartbeat reached the workflow: recorded, and the contract it was wanted under marked
   * delivered, so the heartbeats after it wait for the workflow's next contract.
   */
  async delivered(workspaceId: string, wantVersion: number): Promise<void> {
    await this.pool.query(
      `UPDATE workspace_heartbeats
          SET last_seen_at = now(), beats = beats + 1, delivered_version = greatest(delivered_version, $2)
        WHERE workspace_id = $1`,
      [workspaceId, wantVersion],
    );
  }

  /** Gives a workspace created without one (outside the API) its ledger row, wanting any heartbeat. */
  async ensureRow(workspaceId: string): Promise<void> {
    await this.pool.query(
      `INSERT INTO workspace_heartbeats (workspace_id) SELECT id FROM workspaces WHERE id = $1 ON CONFLICT DO NOTHING`,
      [workspaceId],
    );
  }

  /** The workspace's ledger row as an operator reads it. */
  async read(workspaceId: string): Promise<HeartbeatLedger> {
    const { rows } = await this.pool.query<{
      last_seen_at: Date | null;
      beats: string;
      want: HeartbeatWant;
      want_version: string;
      delivered_version: string;
      lease_watched: boolean;
      expires_at: Date | null;
    }>(
      `SELECT last_seen_at, beats, want, want_version, delivered_version, lease_watched,
              CASE WHEN lease_watched THEN greatest(last_seen_at, lease_since) + ttl_ms * interval '1 millisecond' END
                AS expires_at
         FROM workspace_heartbeats WHERE workspace_id = $1`,
      [workspaceId],
    );
    const row = rows[0];
    return {
      lastSeenAt: row?.last_seen_at?.toISOString() ?? null,
      beats: Number(row?.beats ?? 0),
      want: row?.want ?? 'any',
      wantVersion: Number(row?.want_version ?? 0),
      deliveredVersion: Number(row?.delivered_version ?? 0),
      leaseWatched: row?.lease_watched ?? false,
      leaseExpiresAt: row?.expires_at?.toISOString() ?? null,
    };
  }

  /**
   * What the workflow reads: how long ago the last heartbeat was recorded, and whether it came
   * after the restart `restartKey` began, both computed by the database on its own clock; and the
   * active tasks that heartbeat reported.
   */
  async reading(workspaceId: string, restartKey: string): Promise<LedgerReading> {
    const { rows } = await this.pool.query<{ age_ms: number | null; since_restart: boolean; active_tasks: number }>(
      `SELECT (extract(epoch FROM now() - last_seen_at) * 1000)::float8 AS age_ms,
              coalesce(restart_key = $2 AND last_seen_at > restart_at, FALSE) AS since_restart,
              active_tasks::float8 AS active_tasks
         FROM workspace_heartbeats WHERE workspace_id = $1`,
      [workspaceId, restartKey],
    );
    const row = rows[0];
    return {
      lastSeenAgeMs: row?.age_ms ?? null,
      seenSinceRestart: row?.since_restart ?? false,
      activeTasks: row?.active_tasks ?? 0,
    };
  }

  /**
   * The fleet liveness controller's look at the leases, on the database's clock: how many are
   * watched, how many expired and were not yet signalled for their contract, and up to `limit`
   * of those, the longest silent first. A lease is silent from the later of its last heartbeat,
   * its start and `notBefore` (the end of the last disruption: time the observer could not hear
   * the fleet counts against nobody); with it, how long ago an API process last served. A scan of the table: no index on the expiry, which every
   * heartbeat would write (docs/fleet-liveness.md).
   */
  async findExpired(limit: number, notBefore: string | null = null): Promise<ExpiredLeases> {
    const { rows } = await this.pool.query<{
      workspace_id: string | null;
      want_version: string | null;
      silent_ms: number | null;
      now: Date;
      watched: string;
      max_ttl_ms: string | null;
      served_age_ms: number | null;
      expired: string;
    }>(
      `WITH leases AS (
         SELECT workspace_id, want_version, lease_watched,
                (extract(epoch FROM now() - greatest(last_seen_at, lease_since, $2::timestamptz)) * 1000)::float8
                  AS silent_ms,
                ttl_ms, signalled_version
           FROM workspace_heartbeats
       ), expired AS (
         SELECT * FROM leases
          WHERE lease_watched AND signalled_version < want_version AND silent_ms >= ttl_ms
       ), counts AS (
         SELECT now() AS now, count(*) FILTER (WHERE lease_watched) AS watched,
                max(ttl_ms) FILTER (WHERE lease_watched) AS max_ttl_ms, (SELECT count(*) FROM expired) AS expired,
                (SELECT (extract(epoch FROM now() - max(last_served_at)) * 1000)::float8 FROM api_serving)
                  AS served_age_ms
           FROM leases
       )
       SELECT e.workspace_id, e.want_version, e.silent_ms, c.now, c.watched, c.max_ttl_ms, c.served_age_ms, c.expired
         FROM counts c LEFT JOIN LATERAL (
           SELECT * FROM expired ORDER BY silent_ms DESC LIMIT $1
         ) e ON TRUE`,
      [limit, notBefore],
    );
    const first = rows[0];
    return {
      now: (first?.now ?? new Date()).toISOString(),
      watched: Number(first?.watched ?? 0),
      maxTtlMs: Number(first?.max_ttl_ms ?? 0),
      servedAgeMs: first?.served_age_ms ?? null,
      expired: Number(first?.expired ?? 0),
      leases: rows.flatMap((row) =>
        row.workspace_id === null
          ? []
          : [{ workspaceId: row.workspace_id, version: Number(row.want_version), silentForMs: row.silent_ms ?? 0 }],
      ),
    };
  }

  /** The controller signalled these expired leases: not again for the same contract. */
  async markSignalled(leases: { workspaceId: string; version: number }[]): Promise<void> {
    if (leases.length === 0) return;
    await this.pool.query(
      `UPDATE workspace_heartbeats h SET signalled_version = greatest(h.signalled_version, s.version)
         FROM unnest($1::text[], $2::bigint[]) AS s (workspace_id, version)
        WHERE h.workspace_id = s.workspace_id`,
      [leases.map((lease) => lease.workspaceId), leases.map((lease) => lease.version)],
    );
  }
}
