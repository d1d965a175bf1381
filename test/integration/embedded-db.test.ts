/**
 * The embedded database `npm start` uses without DATABASE_URL: PGlite behind pglite-socket,
 * reached by our unchanged Store (two pools, as the worker and the API have) and migrations.
 * Plain pglite-socket mixes concurrent parameterised queries of different connections; this
 * pins the fix in db/embedded.ts, so an upgrade that breaks it fails here.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedDatabase, type EmbeddedDatabase } from '../../db/embedded.js';
import { migrate } from '../../db/migrate.js';
import { Store } from '../../db/store.js';
import { publication, readProjection } from '../helpers/postgres.js';
import { fileScratchDir } from '../helpers/scratch.js';

const dataDir = join(fileScratchDir('embedded'), 'pglite');
let db: EmbeddedDatabase;

beforeAll(async () => {
  db = await startEmbeddedDatabase({ dataDir });
  await migrate(db.url);
}, 60_000);
afterAll(() => db.close());

describe('embedded database', () => {
  it('two pools of concurrent calls (worker and API) each get their own answers', async () => {
    // PGlite answers one connection at a time: forty connections opened at once wait their
    // turn longer than a server's default connect timeout on a loaded machine.
    const patient = { connectTimeoutMs: 30_000, queryTimeoutMs: 60_000 };
    const worker = Store.connect(db.url, patient);
    const api = Store.connect(db.url, patient);
    try {
      const ids = Array.from({ length: 20 }, (_, i) => `emb-${i}`);
      // Interleave transactions, parameterised writes and reads across both pools.
      await Promise.all(
        ids.map(async (id, i) => {
          const plugins = Array.from({ length: (i % 3) + 1 }, (_, p) => ({ name: `p${p}`, source: `local://p${p}` }));
          expect(await api.workspaces.create(id, plugins)).toBe(true);
          await Promise.all([
            worker.workspaces.writeProjection(
              publication({
                workspaceId: id,
                status: 'online',
                url: null,
                statusSince: new Date(i * 1000).toISOString(),
                version: i + 1,
              }),
            ),
            api.tokens.addIfNone(id, randomBytes(32), `tok${i}`.padEnd(8, '0')),
            api.tokens.addIfNone(id, randomBytes(32), `dup${i}`.padEnd(8, '0')),
            worker.trackingRows.record({
              workspaceId: id,
              pluginName: 'p0',
              source: 'local://p0',
              revision: `rev-${id}`,
              installedVia: 'delivered',
            }),
          ]);
          expect(await worker.declaredPlugins.list(id)).toHaveLength((i % 3) + 1);
          expect(await api.workspaces.access(id)).toMatchObject({ status: 'online', liveTokens: 1 });
          expect((await worker.trackingRows.list(id)).map((row) => row.revision)).toEqual([`rev-${id}`]);
          expect((await readProjection(worker, id))?.version).toBe(i + 1);
        }),
      );
      // A failing transaction rolls back alone; the others are untouched.
      await expect(api.workspaces.create('emb-bad', [{ name: '../escape', source: 'local://x' }])).rejects.toThrow();
      expect(await api.workspaces.access('emb-bad')).toBeNull();
      expect((await api.workspaces.list(undefined, 1000)).length).toBe(ids.length);
    } finally {
      await Promise.all([worker.close(), api.close()]);
    }
  });

  it('survives a restart: data kept, migrations already applied, a second opener refused while open', async () => {
    await expect(startEmbeddedDatabase({ dataDir })).rejects.toThrow(/is in use by process/);
    await db.close();
    db = await startEmbeddedDatabase({ dataDir });
    expect(await migrate(db.url)).toEqual([]);
    const store = Store.connect(db.url);
    try {
      expect(await store.workspaces.access('emb-3')).toMatchObject({ status: 'online', liveTokens: 1 });
    } finally {
      await store.close();
    }
  });
});
