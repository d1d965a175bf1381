/**
 * The `workspace_tokens` table: a runtime's instance tokens, stored as their SHA-256 hash and
 * first 8 characters (db/secrets.ts). A workspace holds at most one live token: minting takes a
 * per-workspace lock and checks for a live one first.
 */
import { timingSafeEqual } from 'node:crypto';
import type pg from 'pg';
import { transaction } from '../transaction.js';

/** How long a revoked instance token's row is kept (who held access, until when) before it is deleted. */
export const REVOKED_TOKEN_RETENTION_DAYS = 7;

/** What is stored of an instance token: its SHA-256 and its first 8 characters (db/secrets.ts). */
export interface StoredToken {
  hash: Buffer;
  prefix: string;
}

export class TokensTable {
  constructor(private readonly pool: pg.Pool) {}

  /**
   * Revokes the workspace's live instance tokens, those minted before `mintedBefore` when given
   * (a dead verdict's time: a token the restarted runtime minted after it stays live); returns
   * how many it revoked. Tokens revoked more than REVOKED_TOKEN_RETENTION_DAYS ago, any
   * workspace's, are deleted on the way, so revoked rows do not pile up.
   */
  async revoke(workspaceId: string, mintedBefore?: string): Promise<number> {
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

  async liveCount(workspaceId: string, db: pg.Pool | pg.PoolClient = this.pool): Promise<number> {
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
  async addIfNone(workspaceId: string, tokenHash: Buffer, prefix: string): Promise<boolean> {
    return transaction(this.pool, async (client) => {
      await lockWorkspaceTokens(client, workspaceId);
      if ((await this.liveCount(workspaceId, client)) > 0) return false;
      await insertToken(client, workspaceId, tokenHash, prefix);
      return true;
    });
  }

  /**
   * Consumes the workspace's boot credential (by its hash, from workspace_boot_credentials) and
   * stores a new token in one transaction, under the lock addIfNone takes: of registers racing
   * with the same credential exactly one mints. False, and nothing changes, when the workspace
   * has a live token or the credential is not its pending one (wrong, or used already).
   */
  async addWithBootCredential(
    workspaceId: string,
    credentialHash: Buffer,
    tokenHash: Buffer,
    prefix: string,
  ): Promise<boolean> {
    return transaction(this.pool, async (client) => {
      await lockWorkspaceTokens(client, workspaceId);
      if ((await this.liveCount(workspaceId, client)) > 0) return false;
      const { rows } = await client.query<{ credential_hash: Buffer }>(
        `DELETE FROM workspace_boot_credentials WHERE workspace_id = $1 AND credential_hash = $2
         RETURNING credential_hash`,
        [workspaceId, credentialHash],
      );
      const consumed = rows[0]?.credential_hash;
      if (consumed === undefined || !timingSafeEqual(consumed, credentialHash)) return false;
      await insertToken(client, workspaceId, tokenHash, prefix);
      return true;
    });
  }

  /**
   * The workspace a token belongs to (by hash) and whether it is revoked, bumping a live one's
   * last use; null when no such token is kept (unknown, or revoked past the retention period).
   */
  async owner(tokenHash: Buffer): Promise<{ workspaceId: string; tokenHash: Buffer; revoked: boolean } | null> {
    const { rows } = await this.pool.query<{ workspace_id: string; token_hash: Buffer; revoked: boolean }>(
      `UPDATE workspace_tokens SET last_used_at = CASE WHEN revoked_at IS NULL THEN now() ELSE last_used_at END
       WHERE token_hash = $1 RETURNING workspace_id, token_hash, revoked_at IS NOT NULL AS revoked`,
      [tokenHash],
    );
    const row = rows[0];
    return row ? { workspaceId: row.workspace_id, tokenHash: row.token_hash, revoked: row.revoked } : null;
  }
}

/** The per-workspace lock every mint takes, held until its transaction ends. */
async function lockWorkspaceTokens(client: pg.PoolClient, workspaceId: string): Promise<void> {
  await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [workspaceId]);
}

async function insertToken(
  client: pg.PoolClient,
  workspaceId: string,
  tokenHash: Buffer,
  prefix: string,
): Promise<void> {
  await client.query('INSERT INTO workspace_tokens (workspace_id, token_hash, prefix) VALUES ($1, $2, $3)', [
    workspaceId,
    tokenHash,
    prefix,
  ]);
}
