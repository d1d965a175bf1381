/** The `declared_plugins` table: the plugins a workspace's template declares (the desired set). */
import type pg from 'pg';
import { transaction } from '../transaction.js';

export interface DeclaredPlugin {
  name: string;
  source: string;
}

export class DeclaredPluginsTable {
  constructor(private readonly pool: pg.Pool) {}

  /** Replaces the declared set in one transaction. */
  async set(workspaceId: string, plugins: DeclaredPlugin[]): Promise<void> {
    await transaction(this.pool, async (client) => {
      await client.query('INSERT INTO workspaces (id) VALUES ($1) ON CONFLICT (id) DO NOTHING', [workspaceId]);
      await client.query('DELETE FROM declared_plugins WHERE workspace_id = $1', [workspaceId]);
      for (const plugin of plugins) {
        await client.query('INSERT INTO declared_plugins (workspace_id, plugin_name, source) VALUES ($1, $2, $3)', [
          workspaceId,
          plugin.name,
          plugin.source,
        ]);
      }
    });
  }

  async list(workspaceId: string): Promise<DeclaredPlugin[]> {
    const { rows } = await this.pool.query<{ plugin_name: string; source: string }>(
      'SELECT plugin_name, source FROM declared_plugins WHERE workspace_id = $1 ORDER BY plugin_name',
      [workspaceId],
    );
    return rows.map((row) => ({ name: row.plugin_name, source: row.source }));
  }
}
