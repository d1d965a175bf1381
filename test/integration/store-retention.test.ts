/** What the store keeps bounded: revoked instance tokens age out after their retention. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../../db/store.js';
import { REVOKED_TOKEN_RETENTION_DAYS } from '../../db/tables/tokens.js';
import { connectTestStore, ensureWorkspace } from '../helpers/postgres.js';

let store: Store;
beforeAll(async () => {
  store = await connectTestStore();
});
afterAll(() => store.close());

/** A token row named `name` (its prefix), revoked that many days ago, or live when null. */
async function token(workspaceId: string, name: string, revokedDaysAgo: number | null): Promise<void> {
  await store.pool.query(
    `INSERT INTO workspace_tokens (workspace_id, token_hash, prefix, revoked_at)
     VALUES ($1, convert_to($1 || '/' || $2, 'UTF8'), $2,
             CASE WHEN $3::int IS NULL THEN NULL ELSE now() - make_interval(days => $3::int) END)`,
    [workspaceId, name, revokedDaysAgo],
  );
}

async function tokens(workspaceId: string): Promise<string[]> {
  const { rows } = await store.pool.query<{ prefix: string }>(
    'SELECT prefix FROM workspace_tokens WHERE workspace_id = $1 ORDER BY prefix',
    [workspaceId],
  );
  return rows.map((row) => row.prefix);
}

describe('revoked token retention', () => {
  it(`a revocation deletes any workspace's tokens revoked more than ${REVOKED_TOKEN_RETENTION_DAYS} days ago`, async () => {
    const suffix = `${process.pid}-${Date.now()}`;
    const [old, other] = [`retention-old-${suffix}`, `retention-other-${suffix}`];
    await ensureWorkspace(store, old);
    await ensureWorkspace(store, other);
    await token(old, 'expired', REVOKED_TOKEN_RETENTION_DAYS + 1);
    await token(old, 'recent', REVOKED_TOKEN_RETENTION_DAYS - 1);
    await token(old, 'live', null);
    await token(other, 'current', null);

    expect(await store.tokens.revoke(other)).toBe(1);
    expect(await tokens(old)).toEqual(['live', 'recent']);
    // The revoked token of the other workspace is kept for its retention.
    expect(await tokens(other)).toEqual(['current']);
    expect(await store.tokens.liveCount(other)).toBe(0);
  });
});
