/**
 * The `workspace_boot_credentials` table: the hash of the credential a workspace's box was last
 * started with, one per workspace. A register presenting it mints the first instance token and
 * consumes it (TokensTable.addWithBootCredential).
 */
import type pg from 'pg';

export class BootCredentialsTable {
  constructor(private readonly pool: pg.Pool) {}

  /**
   * Stores the hash of the workspace's new boot credential, replacing any before: only the
   * credential its box was last started with lets a register through. A workspace without a
   * row (it could not register anyway) gets none, rather than failing its box's restart.
   */
  async set(workspaceId: string, credentialHash: Buffer): Promise<void> {
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
  async owners(credentialHash: Buffer): Promise<{ workspaceId: string; credentialHash: Buffer }[]> {
    const { rows } = await this.pool.query<{ workspace_id: string; credential_hash: Buffer }>(
      'SELECT workspace_id, credential_hash FROM workspace_boot_credentials WHERE credential_hash = $1',
      [credentialHash],
    );
    return rows.map((row) => ({ workspaceId: row.workspace_id, credentialHash: row.credential_hash }));
  }

  /** The hash of the workspace's pending boot credential; null when none is pending. */
  async hash(workspaceId: string): Promise<Buffer | null> {
    const { rows } = await this.pool.query<{ credential_hash: Buffer }>(
      'SELECT credential_hash FROM workspace_boot_credentials WHERE workspace_id = $1',
      [workspaceId],
    );
    return rows[0]?.credential_hash ?? null;
  }
}
