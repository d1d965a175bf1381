/**
 * The `box` column of `workspaces`: how the worker reaches a workspace's box, as the operator set
 * it (null: the worker's default driver).
 */
import type pg from 'pg';

export class BoxSettingsColumn {
  constructor(private readonly pool: pg.Pool) {}

  /** Sets how the worker reaches the workspace's box (null: the default driver); false for an unknown workspace. */
  async set(workspaceId: string, box: object | null): Promise<boolean> {
    const { rowCount } = await this.pool.query('UPDATE workspaces SET box = $2 WHERE id = $1 AND removed_at IS NULL', [
      workspaceId,
      box === null ? null : JSON.stringify(box),
    ]);
    return rowCount === 1;
  }

  /** How the worker reaches the workspace's box, as stored (unvalidated); null: the default driver. */
  async read(workspaceId: string): Promise<unknown> {
    const { rows } = await this.pool.query<{ box: unknown }>('SELECT box FROM workspaces WHERE id = $1', [workspaceId]);
    return rows[0]?.box ?? null;
  }
}
