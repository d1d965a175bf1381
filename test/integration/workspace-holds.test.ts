/**
 * The holds the projection carries for the API's fleet gauges (db/tables/workspaces.ts): written
 * with a newer version only, kept as stored by a write without them, counted per status.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../../db/store.js';
import { connectTestStore, ensureWorkspace, publication } from '../helpers/postgres.js';
import { uniqueId } from '../helpers/worker.js';

let store: Store;
beforeAll(async () => {
  // Its own database: the test counts whole-table totals.
  store = await connectTestStore('holds');
});
afterAll(async () => {
  await store.close();
});

const projection = (workspaceId: string, version: number) => ({
  workspaceId,
  status: 'offline',
  url: null,
  statusSince: new Date().toISOString(),
  version,
});

describe('holds in the projection', () => {
  it('cordoned and crash-looping are written with the projection and counted per status', async () => {
    const before = await store.workspaces.byStatus();
    const offline = (rows: typeof before) => rows.find((row) => row.status === 'offline');
    const [a, b] = [uniqueId('held-a'), uniqueId('held-b')];
    for (const id of [a, b]) await ensureWorkspace(store, id);
    await store.workspaces.writeProjection(
      publication(projection(a, 1), { holds: { cordoned: true, crashLooping: true } }),
    );
    await store.workspaces.writeProjection(
      publication(projection(b, 1), { holds: { cordoned: true, crashLooping: false } }),
    );
    let after = offline(await store.workspaces.byStatus());
    expect(after?.cordoned).toBe((offline(before)?.cordoned ?? 0) + 2);
    expect(after?.crashLooping).toBe((offline(before)?.crashLooping ?? 0) + 1);

    // An older version changes nothing; a write without holds (an older build's) keeps them.
    await store.workspaces.writeProjection(
      publication(projection(a, 0), { holds: { cordoned: false, crashLooping: false } }),
    );
    await store.workspaces.writeProjection(publication(projection(b, 2)));
    after = offline(await store.workspaces.byStatus());
    expect(after?.cordoned).toBe((offline(before)?.cordoned ?? 0) + 2);
    // Uncordoned and recovered: no longer counted.
    await store.workspaces.writeProjection(
      publication(projection(a, 3), { holds: { cordoned: false, crashLooping: false } }),
    );
    after = offline(await store.workspaces.byStatus());
    expect(after?.cordoned).toBe((offline(before)?.cordoned ?? 0) + 1);
    expect(after?.crashLooping).toBe(offline(before)?.crashLooping ?? 0);
  });
});
