/**
 * PostgreSQL access for the activities: declared plugins (desired), tracking rows
 * (installed) and the workspace projection. Every write is an upsert keyed by its natural
 * key, so retried activities converge instead of duplicating.
 */
import pg from 'pg';

export interface DeclaredPlugin {
  name: string;
  source: string;
}

export type InstalledVia = 'boot' | 'delivered';

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
  /** The workflow's transition count: only a newer version overwrites the row. */
  version: number;
}

export class Store {
  constructor(readonly pool: pg.Pool) {}

  static connect(databaseUrl: string): Store {
    return new Store(new pg.Pool({ connectionString: databaseUrl, max: 10 }));
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  async ensureWorkspace(workspaceId: string): Promise<void> {
    await this.pool.query('INSERT INTO workspaces (id) VALUES ($1) ON CONFLICT (id) DO NOTHING', [workspaceId]);
  }

  /** Replaces the declared set in one transaction. */
  async setDeclaredPlugins(workspaceId: string, plugins: DeclaredPlugin[]): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('INSERT INTO workspaces (id) VALUES ($1) ON CONFLICT (id) DO NOTHING', [workspaceId]);
      await client.query('DELETE FROM declared_plugins WHERE workspace_id = $1', [workspaceId]);
      for (const plugin of plugins) {
        await client.query('INSERT INTO declared_plugins (workspace_id, plugin_name, source) VALUES ($1, $2, $3)', [
          workspaceId,
          plugin.name,
          plugin.source,
        ]);
      }
      await client.query('COMMIT');
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

  async writeProjection(p: Projection): Promise<void> {
    await this.pool.query(
      `INSERT INTO workspaces (id, status, url, status_since, version) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (id) DO UPDATE
         SET status = EXCLUDED.status, url = EXCLUDED.url, status_since = EXCLUDED.status_since,
             version = EXCLUDED.version, updated_at = now()
         WHERE workspaces.version < EXCLUDED.version`,
      [p.workspaceId, p.status, p.url, p.statusSince, p.version],
    );
  }

  async readProjection(workspaceId: string): Promise<Projection | null> {
    const { rows } = await this.pool.query<{ status: string; url: string | null; status_since: Date; version: string }>(
      'SELECT status, url, status_since, version FROM workspaces WHERE id = $1',
      [workspaceId],
    );
    const row = rows[0];
    if (!row) return null;
    return {
      workspaceId,
      status: row.status,
      url: row.url,
      statusSince: row.status_since.toISOString(),
      version: Number(row.version),
    };
  }

  /** Revokes every live instance token of the workspace; returns how many were live. */
  async revokeInstanceTokens(workspaceId: string): Promise<number> {
    const result = await this.pool.query(
      'UPDATE workspace_tokens SET revoked_at = now() WHERE workspace_id = $1 AND revoked_at IS NULL',
      [workspaceId],
    );
    return result.rowCount ?? 0;
  }

  async liveTokenCount(workspaceId: string): Promise<number> {
    const { rows } = await this.pool.query<{ n: string }>(
      'SELECT count(*) AS n FROM workspace_tokens WHERE workspace_id = $1 AND revoked_at IS NULL',
      [workspaceId],
    );
    return Number(rows[0]?.n ?? 0);
  }

  /** Stores a token by its SHA-256 hash and 8-character prefix. */
  async addInstanceToken(workspaceId: string, tokenHash: Buffer, prefix: string): Promise<void> {
    await this.pool.query('INSERT INTO workspace_tokens (workspace_id, token_hash, prefix) VALUES ($1, $2, $3)', [
      workspaceId,
      tokenHash,
      prefix,
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
