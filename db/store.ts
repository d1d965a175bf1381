/**
 * PostgreSQL access for the activities and the API: one `Store` over one pool, one module per
 * table under db/tables/. Every write is an upsert keyed by its natural key, so retried
 * activities converge instead of duplicating.
 *
 * The pool survives the database going away: a connection the server drops while idle is
 * logged and discarded (an unhandled pool error would end the process), a connect gives up
 * after `connectTimeoutMs` and a query after `queryTimeoutMs`, so callers fail fast and the
 * next call opens a fresh connection once the database is back.
 */
import pg from 'pg';
import { ApiServingTable } from './tables/api-serving.js';
import { BootCredentialsTable } from './tables/boot-credentials.js';
import { BoxSettingsColumn } from './tables/box-settings.js';
import { DeclaredPluginsTable } from './tables/declared-plugins.js';
import { EventOutbox } from './tables/events.js';
import { HeartbeatLedgerTable } from './tables/heartbeat-ledger.js';
import { TokensTable } from './tables/tokens.js';
import { TrackingRowsTable } from './tables/tracking-rows.js';
import { WorkspacesTable } from './tables/workspaces.js';

export interface StoreOptions {
  maxConnections?: number;
  connectTimeoutMs?: number;
  queryTimeoutMs?: number;
  /** Called when the server drops an idle connection (database restart); the pool replaces it. */
  onIdleError?: (err: Error) => void;
}

export class Store {
  /** Workspace rows and the projection of their workflows' state. */
  readonly workspaces: WorkspacesTable;
  /** The plugins each workspace declares. */
  readonly declaredPlugins: DeclaredPluginsTable;
  /** The plugins on each box (installed_plugins). */
  readonly trackingRows: TrackingRowsTable;
  /** Runtimes' instance tokens. */
  readonly tokens: TokensTable;
  /** The credential each box was last started with. */
  readonly bootCredentials: BootCredentialsTable;
  /** Each workspace's lease: when its runtime last heartbeat, and the liveness contract its workflow published. */
  readonly heartbeats: HeartbeatLedgerTable;
  /** How the worker reaches each box. */
  readonly boxSettings: BoxSettingsColumn;
  /** The status changes the workflows made, for GET /events (written with the projection). */
  readonly events: EventOutbox;
  /** When each API process last served: the fleet liveness controller suspects itself when none did. */
  readonly serving: ApiServingTable;

  constructor(readonly pool: pg.Pool) {
    this.workspaces = new WorkspacesTable(pool);
    this.declaredPlugins = new DeclaredPluginsTable(pool);
    this.trackingRows = new TrackingRowsTable(pool);
    this.tokens = new TokensTable(pool);
    this.bootCredentials = new BootCredentialsTable(pool);
    this.heartbeats = new HeartbeatLedgerTable(pool);
    this.boxSettings = new BoxSettingsColumn(pool);
    this.events = new EventOutbox(pool);
    this.serving = new ApiServingTable(pool);
  }

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

  async ping(): Promise<void> {
    await this.pool.query('SELECT 1');
  }

  /** The database's time: the clock the fleet's remediation budget is refilled on. */
  async now(): Promise<string> {
    const { rows } = await this.pool.query<{ now: Date }>('SELECT now() AS now');
    const now = rows[0]?.now;
    if (now === undefined) throw new Error('SELECT now() returned no row');
    return now.toISOString();
  }
}
