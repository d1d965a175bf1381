/**
 * PostgreSQL access for the activities and the API: declared plugins (desired), tracking rows
 * (installed), the workspace projection, instance tokens and boot credentials. Every write is an upsert keyed by
 * its natural key, so retried activities converge instead of duplicating.
 *
 * The pool survives the database going away: a connection the server drops while idle is
 * logged and discarded (an unhandled pool error would end the process), a connect gives up
 * after `connectTimeoutMs` and a query after `queryTimeoutMs`, so callers fail fast and the
 * next call opens a fresh connection once the database is back.
 */
import { timingSafeEqual } from 'node:crypto';
import pg from 'pg';
import type { DeliveryMode } from '../workflows/payloads.js';
import type {
  HeartbeatFacts,
  HeartbeatWant,
  InstalledVia,
  LivenessContract,
} from '../workflows/state-machine.js';

/** How long a revoked instance token's row is kept (who held access, until when) before it is deleted. */
export const REVOKED_TOKEN_RETENTION_DAYS = 7;

export interface DeclaredPlugin {
  name: string;
  source: string;
}

/** What is stored of an instance token: its SHA-256 and its first 8 characters (db/secrets.ts). */
export interface StoredToken {
  hash: Buffer;
  prefix: string;
}

export interface TrackingRow {
  workspaceId: string;
  pluginName: string;
  source: string;
  revision: string;
  installedVia: InstalledVia;
}

export interface Projection {
  workspaceId: string;
  status: string;
  url: string | null;
  statusSince: string;
  /** The workflow's count of projection writes: only a newer version overwrites the row. */
  version: number;
  /** Absent (runs from before it was projected) or null (not registered yet): the row keeps its own. */
  deliveryMode?: DeliveryMode | null;
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

/** The ledger as dead detection reads it: an age and a comparison made by the database, on its clock. */
export interface LedgerReading {
  /** How long ago the last heartbeat was recorded; null before any. */
  lastSeenAgeMs: number | null;
  /** A heartbeat was recorded after the restart in progress began. */
  seenSinceRestart: boolean;
}

/** A lease that expired and was not yet signalled for its contract. */
export interface ExpiredLease {
  workspaceId: string;
  version: number;
  silentForMs: number;
}

export interface ExpiredLeases {
  /** Leases watched now. */
  watched: number;
  /** Expired and not yet signalled, all of them. */
  expired: number;
  /** Up to the limit asked, the longest silent first. */
  leases: ExpiredLease[];
}

export interface StoreOptions {
  maxConnections?: number;
  connectTimeoutMs?: number;
  queryTimeoutMs?: number;
  /** Called when the server drops an idle connection (database restart); the pool replaces it. */
  onIdleError?: (err: Error) => void;
}

export class Store {
  constructor(readonly pool: pg.Pool) {}

  static connect(databaseUrl: string, options: StoreOptions = {}): Store {
    const pool = new pg.Pool({
      connectionString: databaseUrl,
      max: options.maxConnections ?? 10,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 2_000,
      query_timeout: options.queryTimeoutMs ?? 10_000,
    });
    const onIdleError =
      options.onIdleError ??
      ((err: Error) =>
        console.error(`database: an idle connection failed (${err.message}); the next query reconnects`));
    pool.on('error', onIdleError);
    return new Store(pool);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  /**
   * Creates the workspace row, its heartbeat ledger row, its declared plugins and, when given, its
   * first instance token, in one statement: atomic and one round trip. False, and nothing written, when the id is taken.
   * No other token can exist for a row this statement inserts, so the token takes no lock.
   */
  async createWorkspace(
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
  async workspaceAccess(workspaceId: string): Promise<WorkspaceAccess | null> {
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
  async liveWorkspaces(): Promise<{ workspaceId: string; external: boolean }[]> {
    const { rows } = await this.pool.query<{ id: string; external: boolean }>(
      `SELECT id, external FROM workspaces WHERE removed_at IS NULL AND status <> 'removed' ORDER BY id`,
    );
    return rows.map((row) => ({ workspaceId: row.id, external: row.external }));
  }

  async listWorkspaces(status: string | undefined, limit: number): Promise<Projection[]> {
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

  /** Replaces the declared set in one transaction. */
  async setDeclaredPlugins(workspaceId: string, plugins: DeclaredPlugin[]): Promise<void> {
    await this.transaction(async (client) => {
      await client.query('INSERT INTO workspaces (id) VALUES ($1) ON CONFLICT (id) DO NOTHING', [workspaceId]);
      await client.query('DELETE FROM declared_plugins WHERE workspace_id = $1', [workspaceId]);
      await insertDeclared(client, workspaceId, plugins);
    });
  }

  private async transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK');
      throw err;
    } finally {
      client.release();
    }
  }

  async listDeclaredPlugins(workspaceId: string): Promise<DeclaredPlugin[]> {
    const { rows } = await this.pool.query<{ plugin_name: string; source: string }>(
      'SELECT plugin_name, source FROM declared_plugins WHERE workspace_id = $1 ORDER BY plugin_name',
      [workspaceId],
    );
    return rows.map((row) => ({ name: row.plugin_name, source: row.source }));
  }

  async listTrackingRows(workspaceId: string): Promise<TrackingRow[]> {
    const { rows } = await this.pool.query<{
      plugin_name: string;
      source: string;
      revision: string;
      installed_via: InstalledVia;
    }>(
      'SELECT plugin_name, source, revision, installed_via FROM installed_plugins WHERE workspace_id = $1 ORDER BY plugin_name',
      [workspaceId],
    );
    return rows.map((row) => ({
      workspaceId,
      pluginName: row.plugin_name,
      source: row.source,
      revision: row.revision,
      installedVia: row.installed_via,
    }));
  }

  /**
   * The projection row and the liveness contract in the ledger row, in one statement: each only
   * from a newer version than it holds, so a retried or late write never regresses either. The
   * lease runs from the database's `now()` minus the workflow's age of its last sign of life;
   * the restart's start is stamped once per restart.
   */
  async writeProjection(p: Publication): Promise<void> {
    const { contract } = p;
    await this.pool.query(
      `WITH projection AS (
         INSERT INTO workspaces (id, status, url, status_since, version, delivery_mode) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE
           SET status = EXCLUDED.status, url = EXCLUDED.url, status_since = EXCLUDED.status_since,
               version = EXCLUDED.version, updated_at = now(),
               delivery_mode = coalesce(EXCLUDED.delivery_mode, workspaces.delivery_mode)
           WHERE workspaces.version < EXCLUDED.version
         RETURNING id
       )
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
         WHERE h.want_version < EXCLUDED.want_version`,
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
      ],
    );
  }

  /**
   * Revokes the workspace's live instance tokens, those minted before `mintedBefore` when given
   * (a dead verdict's time: a token the restarted runtime minted after it stays live); returns
   * how many it revoked. Tokens revoked more than REVOKED_TOKEN_RETENTION_DAYS ago, any
   * workspace's, are deleted on the way, so revoked rows do not pile up.
   */
  async revokeInstanceTokens(workspaceId: string, mintedBefore?: string): Promise<number> {
    const result = await this.pool.query(
      `UPDATE workspace_tokens SET revoked_at = now()
       WHERE workspace_id = $1 AND revoked_at IS NULL AND ($2::timestamptz IS NULL OR created_at < $2)`,
      [workspaceId, mintedBefore ?? null],
    );
    await this.pool.query(`DELETE FROM workspace_tokens WHERE revoked_at < now() - make_interval(days => $1)`, [
      REVOKED_TOKEN_RETENTION_DAYS,
    ]);
    return result.rowCount ?? 0;
  }

  async liveTokenCount(workspaceId: string, db: pg.Pool | pg.PoolClient = this.pool): Promise<number> {
    const { rows } = await db.query<{ n: string }>(
      'SELECT count(*) AS n FROM workspace_tokens WHERE workspace_id = $1 AND revoked_at IS NULL',
      [workspaceId],
    );
    return Number(rows[0]?.n ?? 0);
  }

  /**
   * Stores a new token (by its SHA-256 hash and 8-character prefix) only if the workspace has
   * no live one, under a per-workspace lock so concurrent registers mint at most one.
   */
  async addTokenIfNone(workspaceId: string, tokenHash: Buffer, prefix: string): Promise<boolean> {
    return this.transaction(async (client) => {
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [workspaceId]);
      if ((await this.liveTokenCount(workspaceId, client)) > 0) return false;
      await client.query('INSERT INTO workspace_tokens (workspace_id, token_hash, prefix) VALUES ($1, $2, $3)', [
        workspaceId,
        tokenHash,
        prefix,
      ]);
      return true;
    });
  }

  /**
   * Stores the hash of the workspace's new boot credential, replacing any before: only the
   * credential its box was last started with lets a register through. A workspace without a
   * row (it could not register anyway) gets none, rather than failing its box's restart.
   */
  async setBootCredential(workspaceId: string, credentialHash: Buffer): Promise<void> {
    await this.pool.query(
      `INSERT INTO workspace_boot_credentials (workspace_id, credential_hash) SELECT id, $2 FROM workspaces WHERE id = $1
       ON CONFLICT (workspace_id) DO UPDATE SET credential_hash = EXCLUDED.credential_hash, created_at = now()`,
      [workspaceId, credentialHash],
    );
  }

  /**
   * The workspaces whose pending boot credential has this hash (in practice at most one): a
   * register's credential is looked up by itself, not by the workspace it names.
   */
  async bootCredentialOwners(credentialHash: Buffer): Promise<{ workspaceId: string; credentialHash: Buffer }[]> {
    const { rows } = await this.pool.query<{ workspace_id: string; credential_hash: Buffer }>(
      'SELECT workspace_id, credential_hash FROM workspace_boot_credentials WHERE credential_hash = $1',
      [credentialHash],
    );
    return rows.map((row) => ({ workspaceId: row.workspace_id, credentialHash: row.credential_hash }));
  }

  /** The hash of the workspace's pending boot credential; null when none is pending. */
  async bootCredentialHash(workspaceId: string): Promise<Buffer | null> {
    const { rows } = await this.pool.query<{ credential_hash: Buffer }>(
      'SELECT credential_hash FROM workspace_boot_credentials WHERE workspace_id = $1',
      [workspaceId],
    );
    return rows[0]?.credential_hash ?? null;
  }

  /**
   * Consumes the workspace's boot credential (by its hash) and stores a new token in one
   * transaction, under the lock addTokenIfNone takes: of registers racing with the same
   * credential exactly one mints. False, and nothing changes, when the workspace has a live
   * token or the credential is not its pending one (wrong, or used already).
   */
  async addTokenWithBootCredential(
    workspaceId: string,
    credentialHash: Buffer,
    tokenHash: Buffer,
    prefix: string,
  ): Promise<boolean> {
    return this.transaction(async (client) => {
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [workspaceId]);
      if ((await this.liveTokenCount(workspaceId, client)) > 0) return false;
      const { rows } = await client.query<{ credential_hash: Buffer }>(
        `DELETE FROM workspace_boot_credentials WHERE workspace_id = $1 AND credential_hash = $2
         RETURNING credential_hash`,
        [workspaceId, credentialHash],
      );
      const consumed = rows[0]?.credential_hash;
      if (consumed === undefined || !timingSafeEqual(consumed, credentialHash)) return false;
      await client.query('INSERT INTO workspace_tokens (workspace_id, token_hash, prefix) VALUES ($1, $2, $3)', [
        workspaceId,
        tokenHash,
        prefix,
      ]);
      return true;
    });
  }

  /**
   * The workspace a token belongs to (by hash) and whether it is revoked, bumping a live one's
   * last use; null when no such token is kept (unknown, or revoked past the retention period).
   */
  async tokenOwner(tokenHash: Buffer): Promise<{ workspaceId: string; tokenHash: Buffer; revoked: boolean } | null> {
    const { rows } = await this.pool.query<{ workspace_id: string; token_hash: Buffer; revoked: boolean }>(
      `UPDATE workspace_tokens SET last_used_at = CASE WHEN revoked_at IS NULL THEN now() ELSE last_used_at END
       WHERE token_hash = $1 RETURNING workspace_id, token_hash, revoked_at IS NOT NULL AS revoked`,
      [tokenHash],
    );
    const row = rows[0];
    return row ? { workspaceId: row.workspace_id, tokenHash: row.token_hash, revoked: row.revoked } : null;
  }

  /**
   * The heartbeat's one statement: checks the token (a live one of this workspace) and that the
   * workspace is not removed, decides from the published contract whether the workflow wants the
   * heartbeat (heartbeat_wanted), and records it unless it is wanted (a wanted one is recorded
   * once the workflow has it: heartbeatDelivered). Null, and nothing recorded, when the token or
   * the workspace does not pass, or the workspace has no ledger row.
   */
  async recordHeartbeat(tokenHash: Buffer, workspaceId: string, beat: HeartbeatFacts): Promise<HeartbeatRecord | null> {
    const wanted = `heartbeat_wanted(h.want, h.want_version, h.delivered_version, h.degrade_error_rate,
                                     h.recover_error_rate, h.has_card, $3, $4, $5, $6)`;
    const { rows } = await this.pool.query<{ wanted: boolean; want_version: string }>(
      `UPDATE workspace_heartbeats h
          SET last_seen_at = CASE WHEN ${wanted} THEN h.last_seen_at ELSE now() END,
              beats = CASE WHEN ${wanted} THEN h.beats ELSE h.beats + 1 END
         FROM workspace_tokens t, workspaces w
        WHERE h.workspace_id = $2 AND t.token_hash = $1 AND t.workspace_id = $2 AND t.revoked_at IS NULL
          AND w.id = $2 AND w.removed_at IS NULL AND w.status <> 'removed'
       RETURNING ${wanted} AS wanted, h.want_version`,
      [tokenHash, workspaceId, beat.errorRate, beat.runtimeState, beat.managesOwnStatus, beat.bringsCard],
    );
    const row = rows[0];
    return row ? { wanted: row.wanted, wantVersion: Number(row.want_version) } : null;
  }

  /**
   * A wanted heartbeat reached the workflow: recorded, and the contract it was wanted under marked
   * delivered, so the heartbeats after it wait for the workflow's next contract.
   */
  async heartbeatDelivered(workspaceId: string, wantVersion: number): Promise<void> {
    await this.pool.query(
      `UPDATE workspace_heartbeats
          SET last_seen_at = now(), beats = beats + 1, delivered_version = greatest(delivered_version, $2)
        WHERE workspace_id = $1`,
      [workspaceId, wantVersion],
    );
  }

  /** Gives a workspace created without one (outside the API) its ledger row, wanting any heartbeat. */
  async ensureLedgerRow(workspaceId: string): Promise<void> {
    await this.pool.query(
      `INSERT INTO workspace_heartbeats (workspace_id) SELECT id FROM workspaces WHERE id = $1 ON CONFLICT DO NOTHING`,
      [workspaceId],
    );
  }

  /** The workspace's ledger row as an operator reads it. */
  async heartbeatLedger(workspaceId: string): Promise<HeartbeatLedger> {
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
   * What dead detection reads: how long ago the last heartbeat was recorded, and whether it came
   * after the restart `restartKey` began, both computed by the database on its own clock.
   */
  async readLedger(workspaceId: string, restartKey: string): Promise<LedgerReading> {
    const { rows } = await this.pool.query<{ age_ms: number | null; since_restart: boolean }>(
      `SELECT (extract(epoch FROM now() - last_seen_at) * 1000)::float8 AS age_ms,
              coalesce(restart_key = $2 AND last_seen_at > restart_at, FALSE) AS since_restart
         FROM workspace_heartbeats WHERE workspace_id = $1`,
      [workspaceId, restartKey],
    );
    const row = rows[0];
    return { lastSeenAgeMs: row?.age_ms ?? null, seenSinceRestart: row?.since_restart ?? false };
  }

  /**
   * The fleet liveness controller's look at the leases, on the database's clock: how many are
   * watched, how many expired and were not yet signalled for their contract, and up to `limit`
   * of those, the longest silent first. A scan of the table: no index on the expiry, which every
   * heartbeat would write (docs/fleet-liveness.md).
   */
  async findExpiredLeases(limit: number): Promise<ExpiredLeases> {
    const { rows } = await this.pool.query<{
      workspace_id: string | null;
      want_version: string | null;
      silent_ms: number | null;
      watched: string;
      expired: string;
    }>(
      `WITH leases AS (
         SELECT workspace_id, want_version, lease_watched,
                (extract(epoch FROM now() - greatest(last_seen_at, lease_since)) * 1000)::float8 AS silent_ms,
                ttl_ms, signalled_version
           FROM workspace_heartbeats
       ), expired AS (
         SELECT * FROM leases
          WHERE lease_watched AND signalled_version < want_version AND silent_ms >= ttl_ms
       ), counts AS (
         SELECT count(*) FILTER (WHERE lease_watched) AS watched, (SELECT count(*) FROM expired) AS expired
           FROM leases
       )
       SELECT e.workspace_id, e.want_version, e.silent_ms, c.watched, c.expired
         FROM counts c LEFT JOIN LATERAL (
           SELECT * FROM expired ORDER BY silent_ms DESC LIMIT $1
         ) e ON TRUE`,
      [limit],
    );
    const first = rows[0];
    return {
      watched: Number(first?.watched ?? 0),
      expired: Number(first?.expired ?? 0),
      leases: rows.flatMap((row) =>
        row.workspace_id === null
          ? []
          : [{ workspaceId: row.workspace_id, version: Number(row.want_version), silentForMs: row.silent_ms ?? 0 }],
      ),
    };
  }

  /** The controller signalled these expired leases: not again for the same contract. */
  async markLeasesSignalled(leases: { workspaceId: string; version: number }[]): Promise<void> {
    if (leases.length === 0) return;
    await this.pool.query(
      `UPDATE workspace_heartbeats h SET signalled_version = greatest(h.signalled_version, s.version)
         FROM unnest($1::text[], $2::bigint[]) AS s (workspace_id, version)
        WHERE h.workspace_id = s.workspace_id`,
      [leases.map((lease) => lease.workspaceId), leases.map((lease) => lease.version)],
    );
  }

  async ping(): Promise<void> {
    await this.pool.query('SELECT 1');
  }

  /** Sets how the worker reaches the workspace's box (null: the default driver); false for an unknown workspace. */
  async setBoxSettings(workspaceId: string, box: object | null): Promise<boolean> {
    const { rowCount } = await this.pool.query('UPDATE workspaces SET box = $2 WHERE id = $1 AND removed_at IS NULL', [
      workspaceId,
      box === null ? null : JSON.stringify(box),
    ]);
    return rowCount === 1;
  }

  /** How the worker reaches the workspace's box, as stored (unvalidated); null: the default driver. */
  async boxSettings(workspaceId: string): Promise<unknown> {
    const { rows } = await this.pool.query<{ box: unknown }>('SELECT box FROM workspaces WHERE id = $1', [workspaceId]);
    return rows[0]?.box ?? null;
  }

  async deleteTrackingRow(workspaceId: string, pluginName: string): Promise<void> {
    await this.pool.query('DELETE FROM installed_plugins WHERE workspace_id = $1 AND plugin_name = $2', [
      workspaceId,
      pluginName,
    ]);
  }

  async recordInstalled(row: TrackingRow): Promise<void> {
    await this.pool.query(
      `INSERT INTO installed_plugins (workspace_id, plugin_name, source, revision, installed_via)
       VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (workspace_id, plugin_name) DO UPDATE
         SET source = EXCLUDED.source, revision = EXCLUDED.revision,
             installed_via = EXCLUDED.installed_via, updated_at = now()`,
      [row.workspaceId, row.pluginName, row.source, row.revision, row.installedVia],
    );
  }
}

async function insertDeclared(client: pg.PoolClient, workspaceId: string, plugins: DeclaredPlugin[]): Promise<void> {
  for (const plugin of plugins) {
    await client.query('INSERT INTO declared_plugins (workspace_id, plugin_name, source) VALUES ($1, $2, $3)', [
      workspaceId,
      plugin.name,
      plugin.source,
    ]);
  }
}
