/**
 * The `installed_plugins` table: one tracking row per plugin on a workspace's box (its source,
 * revision and how it got there), written by the reconcile whether it delivered the plugin or
 * found it there already.
 */
import type pg from 'pg';
import type { InstalledVia } from '../../workflows/state-machine.js';

export interface TrackingRow {
  workspaceId: string;
  pluginName: string;
  source: string;
  revision: string;
  installedVia: InstalledVia;
}

export class TrackingRowsTable {
  constructor(private readonly pool: pg.Pool) {}

  async list(workspaceId: string): Promise<TrackingRow[]> {
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

  async record(row: TrackingRow): Promise<void> {
    await this.pool.query(
      `INSERT INTO installed_plugins (workspace_id, plugin_name, source, revision, installed_via)
       VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (workspace_id, plugin_name) DO UPDATE
         SET source = EXCLUDED.source, revision = EXCLUDED.revision,
             installed_via = EXCLUDED.installed_via, updated_at = now()`,
      [row.workspaceId, row.pluginName, row.source, row.revision, row.installedVia],
    );
  }

  async delete(workspaceId: string, pluginName: string): Promise<void> {
    await this.pool.query('DELETE FROM installed_plugins WHERE workspace_id = $1 AND plugin_name = $2', [
      workspaceId,
      pluginName,
    ]);
  }
}
