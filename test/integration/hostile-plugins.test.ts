/**
 * The hostile-plugin corpus: plugin trees a plugin author could publish (links of every kind, a
 * linked `.revision`, a linked sub-path, a fifo, an oversized file, a deep tree), as git
 * repositories and as local plugin folders. Each is refused by the reconcile's stage step,
 * non-retryably and naming the path inside the plugin, with nothing outside the plugin folder
 * changed, whichever driver the box has: the local one, and SSH against a real sshd. A staged
 * tree holding the same (a cache tampered with) is refused by both drivers' delivery too.
 */
import { existsSync, mkdirSync, readdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, describe, expect, it } from 'vitest';
import type { BoxDriver } from '../../activities/box/driver.js';
import { LocalBoxDriver } from '../../activities/box/local.js';
import { SshBoxDriver } from '../../activities/box/ssh.js';
import { createReconcileActivities } from '../../activities/reconcile.js';
import type { StagedPlugin } from '../../activities/plugins/stage.js';
import type { Store } from '../../db/store.js';
import { commitAll, createPluginRepo, localSourceSettings } from '../helpers/git.js';
import { HOSTILE_TREES, makeVictim, snapshot, writeHostileTree } from '../helpers/hostile.js';
import { startTestSshd } from '../helpers/sshd.js';
import { fileScratchDir } from '../helpers/scratch.js';

const CAP_BYTES = 64 * 1024;
const work = fileScratchDir('hostile-plugins');
const sources = localSourceSettings(work, CAP_BYTES);
const victim = makeVictim(join(work, 'victim'));
const repos = join(work, 'repos');

// Every hostile tree as a git repository (`gitea://hostile/<kind>`) and a local plugin folder.
for (const { kind, localOnly } of HOSTILE_TREES) {
  writeHostileTree(join(sources.pluginsDir, kind), kind, kind, victim, CAP_BYTES);
  if (localOnly) continue;
  createPluginRepo(repos, 'hostile', kind);
  writeHostileTree(join(repos, 'hostile', `${kind}.git`), kind, kind, victim, CAP_BYTES);
  commitAll(join(repos, 'hostile', `${kind}.git`), `hostile: ${kind}`);
}
// A sub-path that is a link to a folder outside the checkout holding a matching manifest.
createPluginRepo(repos, 'hostile', 'mono');
symlinkSync(victim.dir, join(repos, 'hostile', 'mono.git', 'linked'));
commitAll(join(repos, 'hostile', 'mono.git'), 'hostile: a linked sub-path');
symlinkSync(victim.dir, join(sources.pluginsDir, 'linked'));

interface Case {
  name: string;
  pluginName: string;
  source: string;
  /** The path the refusal names. */
  path: string;
}

const cases: Case[] = [
  ...HOSTILE_TREES.filter((tree) => !tree.localOnly).map((tree) => ({
    name: `git: ${tree.kind}`,
    pluginName: tree.kind,
    source: `gitea://hostile/${tree.kind}#main`,
    path: tree.path,
  })),
  ...HOSTILE_TREES.map((tree) => ({
    name: `local: ${tree.kind}`,
    pluginName: tree.kind,
    source: `local://${tree.kind}`,
    path: tree.path,
  })),
  {
    name: 'git: linked sub-path',
    pluginName: 'linked',
    source: 'gitea://hostile/mono/linked#main',
    path: 'linked',
  },
  {
    name: 'local: linked plugin folder',
    pluginName: 'linked',
    source: 'local://linked',
    path: 'linked',
  },
];

const testSshd = await startTestSshd(work, 'the hostile plugin corpus over SSH');
const sshRoots = join(work, 'ssh-boxes');
const ssh = new SshBoxDriver({
  resolve: (workspaceId) => Promise.resolve(testSshd?.settings(join(sshRoots, workspaceId)) ?? null),
  keyDir: testSshd?.keyDir ?? work,
});
const local = new LocalBoxDriver({
  root: join(work, 'local-boxes'),
  runtimeCommand: null,
});

/** A fresh box for the driver, whose folder is returned. */
async function freshBox(driverName: 'local' | 'ssh', workspaceId: string): Promise<string> {
  if (driverName === 'local') return local.createBox(workspaceId);
  const root = join(sshRoots, workspaceId);
  mkdirSync(join(root, 'configs', 'plugins'), { recursive: true });
  return root;
}

afterAll(async () => {
  await ssh.close();
  await testSshd?.sshd.stop();
});

const drivers: { name: 'local' | 'ssh'; driver: BoxDriver; skip: boolean }[] = [
  { name: 'local', driver: local, skip: false },
  { name: 'ssh', driver: ssh, skip: testSshd === null },
];

describe.each(drivers)('the hostile-plugin corpus through the $name driver', ({ name: driverName, driver, skip }) => {
  const activities = createReconcileActivities({
    store: null as unknown as Store,
    driver,
    sources,
  });

  it.skipIf(skip).each(cases)('$name is refused at staging, naming $path, and changes nothing', async (hostile) => {
    const workspaceId = `${driverName}-${hostile.name.replace(/[^a-z]+/g, '-')}`;
    const box = await freshBox(driverName, workspaceId);
    const victimBefore = snapshot(victim.root);
    const boxBefore = snapshot(box);
    const env = new MockActivityEnvironment();
    let outcome: unknown;
    try {
      const staged: StagedPlugin = await env.run(
        (input: Parameters<typeof activities.stagePlugin>[0]) => activities.stagePlugin(input),
        {
          workspaceId,
          pluginName: hostile.pluginName,
          source: hostile.source,
        },
      );
      // Staging let it through: what the delivery then does with it is what must not happen.
      outcome = await env.run(
        (input: Parameters<typeof activities.deliverPlugin>[0]) => activities.deliverPlugin(input),
        { workspaceId, plugin: staged },
      );
    } catch (err) {
      outcome = err;
    }
    expect(snapshot(victim.root)).toBe(victimBefore);
    expect(snapshot(box)).toBe(boxBefore);
    expect(outcome).toMatchObject({
      type: 'PermanentPluginError',
      nonRetryable: true,
    });
    expect((outcome as Error).message).toContain(hostile.path);
    expect((outcome as Error).message).toContain(hostile.source);
    // Nothing was published to the cache, and no work folder was left behind.
    expect(existsSync(sources.cacheDir) ? readdirSync(sources.cacheDir) : []).toEqual([]);
  });

  // The size cap is the stager's: a driver delivers what was staged within it.
  it.skipIf(skip).each(HOSTILE_TREES.filter((tree) => tree.kind !== 'oversized'))(
    'a staged tree holding $kind (a cache tampered with) is not delivered, naming $path',
    async ({ kind, path }) => {
      const workspaceId = `${driverName}-staged-${kind}`;
      const box = await freshBox(driverName, workspaceId);
      const staged = join(work, 'tampered', driverName, kind);
      writeHostileTree(staged, kind, kind, victim, CAP_BYTES);
      const victimBefore = snapshot(victim.root);
      const boxBefore = snapshot(box);
      const outcome = await driver
        .deliverPlugin(workspaceId, {
          pluginName: kind,
          revision: 'f'.repeat(40),
          path: staged,
        })
        .catch((err: unknown) => err);
      expect(snapshot(victim.root)).toBe(victimBefore);
      expect(snapshot(box)).toBe(boxBefore);
      expect(outcome).toBeInstanceOf(Error);
      expect((outcome as Error).message).toContain(path);
    },
  );
});
