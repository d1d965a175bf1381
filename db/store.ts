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
import type { InstalledVia } from '../workflows/state-machine.js';

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

export interface HeartbeatRecord {
  outcome: 'ok' | 'not-found' | 'unauthorized';
  forward: boolean;
  beats: number;
  /** The forward can change the workspace's state; otherwise it is due only by the interval. */
  urgent: boolean;
}

export interface HeartbeatLedger {
  lastSeenAt: string | null;
  /** Heartbeats acknowledged but not yet forwarded to the workflow. */
  pending: number;
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
   * Creates the workspace row, its declared plugins and, when given, its first instance token, in
   * one statement: atomic and one round trip. False, and nothing written, when the id is taken.
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
   * The projection (only a newer version overwrites the row) and, in the same transaction, the
   * status changes it reports into the event outbox (db/events.ts); returns how many events it
   * added (none for a retried write).
   */
  async writeProjection(p: Projection): Promise<number> {
    const { rows } = await this.pool.query<{ added: number }>(
      'SELECT write_projection($1, $2, $3, $4, $5, $6, $7) AS added',
      [
        p.workspaceId,
        p.status,
        p.url,
        p.statusSince,
        p.version,
        p.deliveryMode ?? null,
        JSON.stringify(p.transitions ?? []),
      ],
    );
    return rows[0]?.added ?? 0;
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
   * Records one heartbeat in the ledger and says whether to forward it to the workflow, in one
   * round trip (db/migrations: record_heartbeat). `beats`: how many acknowledged heartbeats a
   * forward stands for (itself and those coalesced since the last forward). Any outcome but
   * `ok` (an unknown or removed workspace, a token that is not its live one) records nothing.
   */
  async recordHeartbeat(
    tokenHash: Buffer,
    workspaceId: string,
    heartbeat: { signature: string; degrades: boolean },
    forwardEveryMs: number,
  ): Promise<HeartbeatRecord> {
    const { rows } = await this.pool.query<HeartbeatRecord>(
      'SELECT outcome, forward, beats, urgent FROM record_heartbeat($1, $2, $3, $4, $5)',
      [tokenHash, workspaceId, heartbeat.signature, heartbeat.degrades, forwardEveryMs],
    );
    return rows[0] ?? { outcome: 'not-found', forward: false, beats: 0, urgent: false };
  }

  /**
   * A register was relayed: it brings the workspace online, so until the next forward is due a
   * heartbeat that does not degrade an online workspace is only recorded (record_heartbeat).
   */
  async noteRegister(workspaceId: string): Promise<void> {
    await this.pool.query(
      `INSERT INTO workspace_heartbeats AS h (workspace_id, last_seen_at, forwarded_at, signature)
       SELECT id, NULL, now(), 'register' FROM workspaces WHERE id = $1
       ON CONFLICT (workspace_id) DO UPDATE SET forwarded_at = now(), signature = 'register'`,
      [workspaceId],
    );
  }

  /** A forward that did not reach the workflow: the heartbeats it carried go back to pending, and the next one forwards. */
  async returnHeartbeats(workspaceId: string, beats: number): Promise<void> {
    await this.pool.query(
      'UPDATE workspace_heartbeats SET pending = pending + $2, forwarded_at = NULL WHERE workspace_id = $1',
      [workspaceId, beats],
    );
  }

  /**
   * A deferred forward that was not sent (no slot free, or its signal failed): its heartbeats go
   * back to pending and the next heartbeat is due to forward them, deferred again. A forward is
   * deferred only when the one before it still stands (for a workspace not online, one made in
   * its current status), so that one is kept: marked as made one interval ago, which is due and
   * not before the status began (a forward is due by the interval only that long after it).
   * Clearing it would make every later heartbeat of a workspace still provisioning an urgent
   * signal, held by the API while Temporal is slow: what the deferral is there to avoid.
   */
  async postponeForward(workspaceId: string, beats: number, forwardEveryMs: number): Promise<void> {
    await this.pool.query(
      `UPDATE workspace_heartbeats
          SET pending = pending + $2, forwarded_at = now() - make_interval(secs => $3 / 1000.0)
        WHERE workspace_id = $1`,
      [workspaceId, beats, forwardEveryMs],
    );
  }

  /** When the workspace's runtime last heartbeat (as the API recorded it), and how many wait to be forwarded. */
  async heartbeatLedger(workspaceId: string): Promise<HeartbeatLedger> {
    const { rows } = await this.pool.query<{ last_seen_at: Date | null; pending: number }>(
      'SELECT last_seen_at, pending FROM workspace_heartbeats WHERE workspace_id = $1',
      [workspaceId],
    );
    const row = rows[0];
    return { lastSeenAt: row?.last_seen_at?.toISOString() ?? null, pending: row?.pending ?? 0 };
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
