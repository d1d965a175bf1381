/**
 * What a box reports about its plugins (the revision a delivery wrote beside a plugin, the
 * version in a manifest, the folder names) is the box's text: it reaches the tracking rows in
 * PostgreSQL, the workflow's state and the Web UI only as a safe token. The real reconcile
 * activities over a box that lies, and real PostgreSQL.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BoxDriver, BoxPlugin } from '../../activities/box/driver.js';
import { boxRevision, createReconcileActivities } from '../../activities/reconcile.js';
import type { Store } from '../../db/store.js';
import { connectTestStore, ensureWorkspace } from '../helpers/postgres.js';
import { uniqueId } from '../helpers/worker.js';

let store: Store;
beforeAll(async () => {
  store = await connectTestStore();
});
afterAll(async () => {
  await store.close();
});

/** Revisions a box may write: each is kept only as a token of safe characters. */
const hostile = [
  'abc\u0000def',
  '[x](javascript:alert(1))',
  '<img src=x onerror=alert(1)>',
  'line one\n# heading',
  '\ud800',
  'x'.repeat(10_000),
  'version with spaces',
];
const SAFE = /^[A-Za-z0-9][A-Za-z0-9._:+~-]{0,127}$/;

/** A box whose listing and manifests are the given ones; nothing else is asked of it. */
function lyingBox(plugins: BoxPlugin[]): BoxDriver {
  const refuse = (): never => {
    throw new Error('not asked in these tests');
  };
  return {
    listPlugins: () => Promise.resolve(plugins),
    readPluginManifest: (_id, name) => Promise.resolve(plugins.find((p) => p.name === name)?.manifest ?? null),
    deliverPlugin: refuse,
    removePlugin: refuse,
    writeBootCredential: refuse,
    restart: refuse,
    isRunning: refuse,
    stop: refuse,
  };
}

function activitiesFor(driver: BoxDriver) {
  return createReconcileActivities({
    store,
    driver,
    sources: {
      giteaBaseUrl: 'https://git.example.test',
      githubBaseUrl: 'https://github.example.test',
      allowUnpinned: false,
      sourceHosts: null,
      fileRoots: [],
      urlPolicy: { allowLoopback: false, allowPrivate: false },
      cacheDir: '/nonexistent',
      pluginsDir: '/nonexistent',
      maxPluginBytes: 1024,
      fetchTimeoutMs: 1000,
      cacheMaxAgeMs: 1000,
    },
  });
}

describe('revisions and names a box reports', () => {
  it('a safe revision is kept as it is; any other becomes the hash of its text, the same for the same text', () => {
    const sha = 'a'.repeat(40);
    for (const kept of [sha, 'version:1.2.3+build.5', `manifest-sha256:${'b'.repeat(64)}`, 'version:2.0.0-rc.1'])
      expect(boxRevision(kept)).toBe(kept);
    for (const text of hostile) {
      expect(boxRevision(text)).toMatch(/^text-sha256:[0-9a-f]{64}$/);
      expect(boxRevision(text)).toBe(boxRevision(text));
    }
    expect(boxRevision(hostile[0] ?? '')).not.toBe(boxRevision(hostile[1] ?? ''));
  });

  it('a listing and a probe hand on safe revisions only, which a tracking row can store; unsafe folder names are left out', async () => {
    const id = uniqueId('box-revision');
    await ensureWorkspace(store, id);
    const plugins: BoxPlugin[] = [
      ...hostile.map((revision, i) => ({ name: `recorded-${i}`, manifest: `name: recorded-${i}\n`, revision })),
      ...hostile.map((version, i) => ({
        name: `baked-${i}`,
        manifest: `name: baked-${i}\nversion: ${JSON.stringify(version)}\n`,
        revision: null,
      })),
      { name: 'evil\u0000name', manifest: 'name: "evil\\0name"\n', revision: 'a'.repeat(40) },
      { name: '[x](javascript:alert(1))', manifest: 'name: "[x](javascript:alert(1))"\n', revision: 'a'.repeat(40) },
    ];
    const activities = activitiesFor(lyingBox(plugins));
    const observed = await activities.listBoxPlugins({ workspaceId: id });
    expect(observed.map((p) => p.name).sort()).toEqual(
      hostile.flatMap((_, i) => [`baked-${i}`, `recorded-${i}`]).sort(),
    );
    const probed = await Promise.all(
      hostile.map((_, i) => activities.probePlugin({ workspaceId: id, pluginName: `baked-${i}` })),
    );
    const revisions = [
      ...observed.map((p) => p.revision),
      ...probed.map((probe) => (probe.presence === 'present' ? probe.revision : `not present: ${probe.presence}`)),
    ];
    for (const revision of revisions) expect(revision).toMatch(SAFE);
    // Each is a revision a tracking row holds (a boot-installed plugin, or one rerecorded after drift).
    for (const [i, revision] of revisions.entries())
      await store.trackingRows.record({
        workspaceId: id,
        pluginName: `p${i}`,
        source: 'gitea://acme/p#main',
        revision,
        installedVia: 'boot',
      });
    expect((await store.trackingRows.list(id)).map((row) => row.revision).sort()).toEqual([...revisions].sort());
  });
});
