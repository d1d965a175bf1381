/**
 * The declared-plugin reconcile end to end: the real workflow on the time-skipping test
 * server, the real activities against real PostgreSQL, the local box driver with a managed
 * runtime process, and temporary git repositories as plugin sources.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActivities, type Activities } from '../../activities/index.js';
import { LocalBoxDriver } from '../../activities/box/local.js';
import type { Store } from '../../db/store.js';
import { defaultLifecycleConfig, type LifecycleConfig } from '../../workflows/config.js';
import {
  declarePluginsSignal,
  heartbeatSignal,
  reconcileSignal,
  registerSignal,
  stateQuery,
  workspaceWorkflowId,
} from '../../workflows/definitions.js';
import type { WorkspaceState } from '../../workflows/state-machine.js';
import { createTimeSkippingEnv } from '../helpers/env.js';
import { commitAll, createPluginRepo, localSourceSettings } from '../helpers/git.js';
import { heartbeatPayload, registerPayload } from '../helpers/payloads.js';
import { connectTestStore, publication, readProjection } from '../helpers/postgres.js';
import { createWorker, expireLease, uniqueId, waitForState } from '../helpers/worker.js';
import { fileScratchDir } from '../helpers/scratch.js';

let env: TestWorkflowEnvironment;
let store: Store;
let worker: Worker;
let running: Promise<void>;
let driver: LocalBoxDriver;
const root = fileScratchDir('reconcile');
const repos = join(root, 'repos');
const taskQueue = uniqueId('reconcile-tests');
const workspaces: string[] = [];

/** Per-workspace test hooks: probe errors and one-off record failures. */
const failProbeFor = new Set<string>();
const failRecordOnceFor = new Set<string>();
const failRecordAlwaysFor = new Set<string>();
const failDeleteRowOnceFor = new Set<string>();
const calls: { name: string; workspaceId: string | undefined }[] = [];

beforeAll(async () => {
  env = await createTimeSkippingEnv();
  store = await connectTestStore();
  driver = new LocalBoxDriver({
    root: join(root, 'boxes'),
    runtimeCommand: [process.execPath, '-e', 'setInterval(() => {}, 1 << 30)'],
  });
  const real = createActivities({
    store,
    driver,
    sources: localSourceSettings(root, 1024 * 1024),
  });
  worker = await createWorker(env, taskQueue, instrument(real));
  running = worker.run();
});

afterAll(async () => {
  worker.shutdown();
  await running;
  await env.teardown();
  await Promise.all(workspaces.map((id) => driver.stopRuntime(id)));
  await store.close();
});

/** Counts every activity call and injects the faults the tests ask for. */
function instrument(real: Activities): Activities {
  const record = (name: string, input: unknown): void => {
    const workspaceId = (input as { workspaceId?: string }).workspaceId;
    calls.push({ name, workspaceId });
  };
  return {
    ...real,
    listPluginDiff: (input) => (record('listPluginDiff', input), real.listPluginDiff(input)),
    probePlugin: (input) => {
      record('probePlugin', input);
      if (failProbeFor.has(input.workspaceId))
        return Promise.resolve({ presence: 'uncertain', detail: 'probe failed' });
      return real.probePlugin(input);
    },
    stagePlugin: (input) => (record('stagePlugin', input), real.stagePlugin(input)),
    deliverPlugin: (input) => (record('deliverPlugin', input), real.deliverPlugin(input)),
    recordInstalled: (input) => {
      record('recordInstalled', input);
      if (failRecordOnceFor.delete(`${input.workspaceId}/${input.pluginName}`)) {
        return Promise.reject(new Error('simulated crash between delivery and tracking row'));
      }
      if (failRecordAlwaysFor.has(input.workspaceId)) {
        return Promise.reject(ApplicationFailure.nonRetryable('simulated: the tracking row cannot be written'));
      }
      return real.recordInstalled(input);
    },
    restartBox: (input) => (record('restartBox', input), real.restartBox(input)),
    listBoxPlugins: (input) => (record('listBoxPlugins', input), real.listBoxPlugins(input)),
    removePlugin: (input) => (record('removePlugin', input), real.removePlugin(input)),
    deleteTrackingRow: (input) => {
      record('deleteTrackingRow', input);
      if (failDeleteRowOnceFor.delete(`${input.workspaceId}/${input.pluginName}`))
        return Promise.reject(new Error('simulated crash between removal and tracking row'));
      return real.deleteTrackingRow(input);
    },
    writeProjection: (input) => (record('writeProjection', input), real.writeProjection(input)),
  };
}

function callsFor(workspaceId: string, name: string): number {
  return calls.filter((call) => call.workspaceId === workspaceId && call.name === name).length;
}

/** Box events written by the local driver when a delivery or restart did work. */
function boxEvents(workspaceId: string): string[] {
  const file = join(driver.boxDir(workspaceId), 'box-events.log');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((line) => line.split(' ').slice(1, 3).join(' '));
}

/** Declares the plugins, creates the box, runs `prepare`, then the runtime registers. */
async function bootWorkspace(
  declared: { name: string; source: string }[],
  prepare: (id: string, boxDir: string) => void = () => undefined,
  config?: Partial<LifecycleConfig>,
): Promise<{ id: string; handle: WorkflowHandle }> {
  const id = uniqueId('rc');
  workspaces.push(id);
  await store.declaredPlugins.set(id, declared);
  const boxDir = await driver.createBox(id);
  await driver.startRuntime(id);
  prepare(id, boxDir);
  const handle = await env.client.workflow.start('workspaceWorkflow', {
    taskQueue,
    workflowId: workspaceWorkflowId(id),
    args: [{ workspaceId: id, ...(config ? { config } : {}) }],
  });
  await handle.signal(registerSignal, registerPayload(id));
  return { id, handle };
}

const settled = (s: WorkspaceState): boolean =>
  !s.reconcile.running && !s.restart.inFlight && s.counters.reconcilesStarted > 0;

describe('declared-plugin reconcile', () => {
  it('boot-installed plugin: tracking row written, nothing delivered, no restart', async () => {
    // The source points at a repository that does not exist: probing first means no fetch at all.
    const { id, handle } = await bootWorkspace([{ name: 'seo', source: 'gitea://nobody/seo#main' }], (_, boxDir) => {
      const pluginDir = join(boxDir, 'configs', 'plugins', 'seo');
      mkdirSync(pluginDir, { recursive: true });
      writeFileSync(join(pluginDir, 'plugin.yaml'), 'name: seo\nversion: 2.1.0\n');
    });

    const state = await waitForState(handle, settled);
    expect(state.plugins['seo']).toMatchObject({ status: 'installed', via: 'boot', revision: 'version:2.1.0' });
    expect(state.status).toBe('online');
    expect(state.restart.count).toBe(0);
    expect(await store.trackingRows.list(id)).toEqual([
      {
        workspaceId: id,
        pluginName: 'seo',
        source: 'gitea://nobody/seo#main',
        revision: 'version:2.1.0',
        installedVia: 'boot',
      },
    ]);
    expect(boxEvents(id)).toEqual([]);
    expect(callsFor(id, 'deliverPlugin')).toBe(0);
    expect(callsFor(id, 'stagePlugin')).toBe(0);

    // A refresh leaves what the image provides to the image: nothing staged, nothing restarted.
    await handle.signal(reconcileSignal, { refresh: true });
    const refreshed = await waitForState(handle, (s) => settled(s) && s.counters.reconcilesStarted === 2);
    expect(refreshed.restart.count).toBe(0);
    expect(refreshed.counters.pluginUpgrades).toBe(0);
    expect(callsFor(id, 'stagePlugin')).toBe(0);
  });

  it('three missing plugins: three deliveries, three rows, exactly one restart', async () => {
    const commits = ['alpha', 'beta', 'gamma'].map((repo) => createPluginRepo(repos, 'acme', repo));
    const { id, handle } = await bootWorkspace([
      { name: 'alpha', source: 'gitea://acme/alpha#main' },
      { name: 'beta', source: 'github://acme/beta#v1' },
      { name: 'gamma', source: `git+file://${repos}/acme/gamma.git#main` },
    ]);
    const state = await waitForState(handle, (s) => settled(s) && s.restart.count === 1);
    expect(state.status).toBe('provisioning'); // restarted: waiting for the runtime to check in again
    expect(state.url).toBeNull();
    expect(state.restart).toMatchObject({ lastRequester: 'reconcile', lastReason: 'reconcile delivered 3 plugin(s)' });
    expect(state.pluginsPending).toBe(0);
    for (const [i, name] of ['alpha', 'beta', 'gamma'].entries()) {
      expect(state.plugins[name]).toMatchObject({ status: 'installed', via: 'delivered', revision: commits[i] });
      expect(readFileSync(join(driver.boxDir(id), 'configs', 'plugins', name, 'plugin.yaml'), 'utf8')).toContain(name);
    }
    const rows = await store.trackingRows.list(id);
    expect(rows.map((r) => [r.pluginName, r.revision, r.installedVia])).toEqual([
      ['alpha', commits[0], 'delivered'],
      ['beta', commits[1], 'delivered'],
      ['gamma', commits[2], 'delivered'],
    ]);
    expect(boxEvents(id).filter((e) => e.startsWith('deliver'))).toHaveLength(3);
    expect(boxEvents(id).filter((e) => e.startsWith('restart'))).toEqual([
      expect.stringMatching(/^restart restart-1-[0-9a-f]{8}$/) as string,
    ]);
    expect(await driver.isRunning(id)).toBe(true);

    // The runtime comes back after the restart: online again, a pass with nothing missing.
    await handle.signal(registerSignal, registerPayload(id));
    const back = await waitForState(
      handle,
      (s) => s.status === 'online' && settled(s) && s.counters.reconcilesStarted === 2,
    );
    expect(back.restart.count).toBe(1);
    expect(boxEvents(id)).toHaveLength(4);

    // The SQL projection followed every transition (provisioning → online → provisioning → online)
    // and every write since: its version is the workflow's.
    expect(back.counters.transitions).toBe(3);
    await expect
      .poll(async () => {
        const now = await handle.query(stateQuery);
        const row = await readProjection(store, id);
        return row?.version === now.versionBase + now.counters.transitions + now.counters.projectionWrites ? row : null;
      })
      .toMatchObject({ status: 'online', url: `http://box-${id}.internal:8000` });
  });

  it('the projection never goes back to an older version', async () => {
    const id = uniqueId('rc-projection');
    await store.workspaces.writeProjection(
      publication({
        workspaceId: id,
        status: 'online',
        url: 'http://a',
        statusSince: new Date().toISOString(),
        version: 5,
      }),
    );
    await store.workspaces.writeProjection(
      publication({
        workspaceId: id,
        status: 'provisioning',
        url: null,
        statusSince: new Date().toISOString(),
        version: 4,
      }),
    );
    expect(await readProjection(store, id)).toMatchObject({ status: 'online', url: 'http://a', version: 5 });
  });

  it('probe error treated as absent: delivered', async () => {
    createPluginRepo(repos, 'acme', 'probed');
    const { id, handle } = await bootWorkspace([{ name: 'probed', source: 'gitea://acme/probed#main' }], (wsId) =>
      failProbeFor.add(wsId),
    );
    const state = await waitForState(handle, (s) => settled(s) && s.restart.count === 1);
    expect(state.plugins['probed']).toMatchObject({ status: 'installed', via: 'delivered' });
    expect(boxEvents(id).filter((e) => e.startsWith('deliver'))).toHaveLength(1);
  });

  it('invalid source: that plugin fails with a clear reason, the others install, no endless retry', async () => {
    createPluginRepo(repos, 'acme', 'good');
    createPluginRepo(repos, 'acme', 'misnamed', { name: 'something-else' });
    const { id, handle } = await bootWorkspace([
      { name: 'good', source: 'gitea://acme/good#main' },
      { name: 'gone', source: 'gitea://acme/gone#main' },
      { name: 'misnamed', source: 'gitea://acme/misnamed#main' },
      { name: 'noref', source: 'gitea://acme/good#no-such-branch' },
      { name: 'unpinned', source: 'gitea://acme/unpinned' },
    ]);
    const state = await waitForState(handle, (s) => settled(s) && s.restart.count === 1);
    expect(state.plugins['good']).toMatchObject({ status: 'installed', via: 'delivered' });
    expect(state.plugins['gone']?.error).toMatch(
      /gitea:\/\/acme\/gone#main.*(does not appear to be a git repository|not found)/,
    );
    expect(state.plugins['misnamed']?.error).toMatch(
      /plugin.yaml names the plugin "something-else", expected "misnamed"/,
    );
    expect(state.plugins['noref']?.error).toMatch(
      /declared plugin "noref" has source gitea:\/\/acme\/good#no-such-branch, which names the plugin "good"/,
    );
    expect(state.plugins['unpinned']?.error).toMatch(/is unpinned: add #<branch\|tag\|sha>/);
    expect(state.pluginsPending).toBe(4);
    expect(state.reconcile.lastOutcome).toBe('failed');
    // Non-retryable: one stage attempt per plugin in this pass, not a retry loop.
    expect(callsFor(id, 'stagePlugin')).toBe(5);
    expect((await store.trackingRows.list(id)).map((r) => r.pluginName)).toEqual(['good']);

    // Declared down to the one that works: the next pass drops the others from the state.
    await store.declaredPlugins.set(id, [{ name: 'good', source: 'gitea://acme/good#main' }]);
    await handle.signal(registerSignal, registerPayload(id));
    const pruned = await waitForState(
      handle,
      (s) => settled(s) && s.counters.reconcilesStarted > state.counters.reconcilesStarted,
    );
    expect(Object.keys(pruned.plugins)).toEqual(['good']);
    expect(pruned).toMatchObject({ pluginsDeclaredCount: 1, pluginsPending: 0 });
  });

  it('missing ref in an existing repository is a permanent failure naming the ref', async () => {
    createPluginRepo(repos, 'acme', 'pinned');
    const { id, handle } = await bootWorkspace([{ name: 'pinned', source: 'gitea://acme/pinned#v9' }]);
    const state = await waitForState(handle, settled);
    expect(callsFor(id, 'stagePlugin')).toBe(1);
    expect(state.plugins['pinned']?.error).toMatch(/ref v9 not found in file:\/\/.*acme\/pinned.git/);
    expect(state.plugins['pinned']?.attempts).toBe(1);
  });

  it('a crash after delivery and before the row: no second delivery, no second restart', async () => {
    createPluginRepo(repos, 'acme', 'fragile');
    const { id, handle } = await bootWorkspace([{ name: 'fragile', source: 'gitea://acme/fragile#main' }], (wsId) =>
      failRecordOnceFor.add(`${wsId}/fragile`),
    );
    const state = await waitForState(handle, (s) => settled(s) && s.restart.count === 1);
    expect(callsFor(id, 'recordInstalled')).toBe(2); // failed once, retried
    expect(callsFor(id, 'deliverPlugin')).toBe(1);
    expect(state.plugins['fragile']).toMatchObject({ status: 'installed', via: 'delivered' });
    expect(boxEvents(id).filter((e) => e.startsWith('deliver'))).toHaveLength(1);
    expect(boxEvents(id).filter((e) => e.startsWith('restart'))).toHaveLength(1);
    expect(await store.trackingRows.list(id)).toHaveLength(1);
  });

  it('delivered but never recorded: the plugin shows failed, and the batch still restarts the box to load it', async () => {
    createPluginRepo(repos, 'acme', 'unrecorded');
    const { id, handle } = await bootWorkspace(
      [{ name: 'unrecorded', source: 'gitea://acme/unrecorded#main' }],
      (wsId) => failRecordAlwaysFor.add(wsId),
    );
    const state = await waitForState(handle, (s) => settled(s) && s.restart.count === 1);
    expect(state.plugins['unrecorded']).toMatchObject({ status: 'failed' });
    expect(state.restart.lastReason).toBe('reconcile delivered 1 plugin(s)');
    expect(boxEvents(id).filter((e) => e.startsWith('deliver'))).toHaveLength(1);
    expect(boxEvents(id).filter((e) => e.startsWith('restart'))).toHaveLength(1);
    expect(await store.trackingRows.list(id)).toHaveLength(0);
  });

  it('second reconcile with nothing missing: no activity beyond the diff and one listing of the box', async () => {
    createPluginRepo(repos, 'acme', 'steady');
    const { id, handle } = await bootWorkspace([{ name: 'steady', source: 'gitea://acme/steady#main' }]);
    await waitForState(handle, (s) => settled(s) && s.restart.count === 1);
    await handle.signal(registerSignal, registerPayload(id));
    await waitForState(handle, (s) => s.status === 'online' && settled(s) && s.counters.reconcilesStarted === 2);
    const before = calls.filter((c) => c.workspaceId === id).length;

    // Silence past the liveness TTL (the fleet liveness controller signals the expired lease), then
    // a heartbeat: offline → online triggers a third pass.
    await env.sleep(defaultLifecycleConfig.livenessTtlMs + 1_000);
    await expireLease(handle);
    await waitForState(handle, (s) => s.status === 'offline');
    await handle.signal(heartbeatSignal, heartbeatPayload(id));
    await waitForState(handle, (s) => s.status === 'online' && settled(s) && s.counters.reconcilesStarted === 3);
    const since = (): string[] =>
      calls
        .filter((c) => c.workspaceId === id)
        .slice(before)
        .map((c) => c.name);
    // The reconcile made one query and listed the box once (back online: its plugins are verified);
    // the settle window's end (it republishes what the workflow wants) and the two transitions
    // (offline, online) each wrote the projection.
    await expect.poll(() => since().filter((name) => name === 'writeProjection')).toHaveLength(3);
    expect(since().filter((name) => name !== 'writeProjection')).toEqual(['listPluginDiff', 'listBoxPlugins']);
  });
});

describe('plugin lifecycle: removal, drift, upgrades', () => {
  const pluginDir = (id: string, name: string): string => join(driver.boxDir(id), 'configs', 'plugins', name);

  /** Boots with the plugins delivered, restarted once, and the runtime back online after its verify pass. */
  async function deliveredAndBack(
    declared: { name: string; source: string }[],
    config?: Partial<LifecycleConfig>,
  ): Promise<{ id: string; handle: WorkflowHandle }> {
    const booted = await bootWorkspace(declared, undefined, config);
    await waitForState(booted.handle, (s) => settled(s) && s.restart.count === 1);
    await booted.handle.signal(registerSignal, registerPayload(booted.id));
    await waitForState(booted.handle, (s) => s.status === 'online' && settled(s) && s.counters.reconcilesStarted === 2);
    return booted;
  }

  it('a plugin no longer declared leaves the box whole, its row goes, one restart; a crash before the row is deleted removes nothing twice', async () => {
    createPluginRepo(repos, 'acme', 'keep');
    createPluginRepo(repos, 'acme', 'drop');
    const { id, handle } = await deliveredAndBack([
      { name: 'keep', source: 'gitea://acme/keep#main' },
      { name: 'drop', source: 'gitea://acme/drop#main' },
    ]);
    expect(existsSync(pluginDir(id, 'drop'))).toBe(true);

    failDeleteRowOnceFor.add(`${id}/drop`);
    await store.declaredPlugins.set(id, [{ name: 'keep', source: 'gitea://acme/keep#main' }]);
    await handle.signal(declarePluginsSignal);
    const state = await waitForState(handle, (s) => settled(s) && s.restart.count === 2);
    expect(state.restart).toMatchObject({
      lastRequester: 'reconcile',
      lastReason: 'reconcile delivered 0 and removed 1 plugin(s)',
    });
    expect(existsSync(pluginDir(id, 'drop'))).toBe(false);
    expect(existsSync(pluginDir(id, 'keep'))).toBe(true);
    expect((await store.trackingRows.list(id)).map((row) => row.pluginName)).toEqual(['keep']);
    expect(Object.keys(state.plugins)).toEqual(['keep']);
    expect(state.counters.pluginsRemoved).toBe(1);
    expect(state.reconcile.lastChanges).toEqual({ delivered: 0, removed: 1, repaired: 0, upgraded: 0 });
    expect(state.pluginsPending).toBe(0);
    // The retried step deleted the row; the box saw one removal.
    expect(callsFor(id, 'deleteTrackingRow')).toBe(2);
    expect(boxEvents(id).filter((e) => e.startsWith('remove'))).toEqual(['remove drop']);
  });

  it('a box rebuilt without its plugins: the register after the boot re-delivers them from one listing, one restart', async () => {
    const commit = createPluginRepo(repos, 'acme', 'rebuilt');
    const { id, handle } = await deliveredAndBack([{ name: 'rebuilt', source: 'gitea://acme/rebuilt#main' }]);
    const listingsBefore = callsFor(id, 'listBoxPlugins');
    expect(listingsBefore).toBe(1); // the register's verify pass: one listing, no probe per plugin

    // The box comes back from its image: the folder is gone, the tracking row still says installed.
    // Its runtime registers (after the settle window: not a repeat of the last register).
    await env.sleep(defaultLifecycleConfig.settleWindowMs);
    rmSync(pluginDir(id, 'rebuilt'), { recursive: true });
    await handle.signal(registerSignal, registerPayload(id));
    const state = await waitForState(handle, (s) => settled(s) && s.restart.count === 2);
    expect(state.restart.lastReason).toBe('reconcile delivered 1 plugin(s)');
    expect(state.plugins['rebuilt']).toMatchObject({ status: 'installed', revision: commit, change: 'repaired' });
    expect(state.counters.driftRepairs).toBe(1);
    expect(readFileSync(join(pluginDir(id, 'rebuilt'), 'plugin.yaml'), 'utf8')).toContain('rebuilt');
    expect(callsFor(id, 'listBoxPlugins')).toBe(listingsBefore + 1);
    expect(callsFor(id, 'probePlugin')).toBe(1); // only the first delivery probed

    // Back after the restart: the listing agrees with the rows, nothing more is delivered.
    await handle.signal(registerSignal, registerPayload(id));
    const calm = await waitForState(
      handle,
      (s) => s.status === 'online' && settled(s) && s.counters.reconcilesStarted === 4,
    );
    expect(calm.restart.count).toBe(2);
    expect(calm.counters.driftRepairs).toBe(1);
  });

  it('a box that loses a repaired plugin again at once: failed with the reason, no restart loop', async () => {
    createPluginRepo(repos, 'acme', 'slippery');
    const { id, handle } = await deliveredAndBack([{ name: 'slippery', source: 'gitea://acme/slippery#main' }]);
    await env.sleep(defaultLifecycleConfig.settleWindowMs);
    rmSync(pluginDir(id, 'slippery'), { recursive: true });
    await handle.signal(registerSignal, registerPayload(id));
    await waitForState(handle, (s) => settled(s) && s.restart.count === 2);
    // Whatever rewrites the box takes it away again before the runtime is back.
    rmSync(pluginDir(id, 'slippery'), { recursive: true });
    await handle.signal(registerSignal, registerPayload(id));
    const state = await waitForState(
      handle,
      (s) => s.status === 'online' && settled(s) && s.counters.reconcilesStarted === 4,
    );
    expect(state.plugins['slippery']).toMatchObject({ status: 'failed' });
    expect(state.plugins['slippery']?.error).toMatch(/drifted again right after its repair/);
    expect(state.pluginsPending).toBe(1);
    expect(state.restart.count).toBe(2);
    expect(callsFor(id, 'deliverPlugin')).toBe(2);
  });

  it('a plugin replaced on the box by another revision is delivered again', async () => {
    const commit = createPluginRepo(repos, 'acme', 'edited');
    const { id, handle } = await deliveredAndBack([{ name: 'edited', source: 'gitea://acme/edited#main' }]);
    writeFileSync(join(pluginDir(id, 'edited'), '.revision'), 'someone-else');
    await handle.signal(reconcileSignal, {});
    const state = await waitForState(handle, (s) => settled(s) && s.restart.count === 2);
    expect(state.plugins['edited']).toMatchObject({ revision: commit, change: 'repaired' });
    expect(readFileSync(join(pluginDir(id, 'edited'), '.revision'), 'utf8')).toBe(commit);
  });

  it('the periodic resync verifies the box on a durable timer, without a heartbeat or a register', async () => {
    createPluginRepo(repos, 'acme', 'resynced');
    const { id, handle } = await deliveredAndBack([{ name: 'resynced', source: 'gitea://acme/resynced#main' }], {
      resyncPeriodMs: 60_000,
    });
    rmSync(pluginDir(id, 'resynced'), { recursive: true });
    await env.sleep(61_000);
    const state = await waitForState(handle, (s) => settled(s) && s.restart.count === 2);
    expect(state.reconcile.lastTrigger).toBe('periodic resync');
    expect(state.counters.driftRepairs).toBe(1);
    expect(existsSync(pluginDir(id, 'resynced'))).toBe(true);
  });

  it("a refresh moves a branch declaration to the branch's new head: delivered, one restart; with no new head, nothing", async () => {
    const first = createPluginRepo(repos, 'acme', 'moving');
    const { id, handle } = await deliveredAndBack([{ name: 'moving', source: 'gitea://acme/moving#main' }]);

    // No new commit: the refresh stages, finds the same revision, and changes nothing.
    await handle.signal(reconcileSignal, { refresh: true });
    const same = await waitForState(handle, (s) => settled(s) && s.counters.reconcilesStarted === 3);
    expect(same.restart.count).toBe(1);
    expect(same.plugins['moving']).toMatchObject({ revision: first });

    const repo = join(repos, 'acme', 'moving.git');
    writeFileSync(join(repo, 'SKILL.md'), '# moving, second edition\n');
    commitAll(repo, 'second edition');
    const head = execFileSync('git', ['-C', repo, 'rev-parse', 'HEAD'], { encoding: 'utf8' }).trim();
    // A plain pass does not look at sources again: the declaration resolved once.
    await handle.signal(reconcileSignal, {});
    const unchanged = await waitForState(handle, (s) => settled(s) && s.counters.reconcilesStarted === 4);
    expect(unchanged.plugins['moving']).toMatchObject({ revision: first });

    await handle.signal(reconcileSignal, { refresh: true });
    const state = await waitForState(handle, (s) => settled(s) && s.restart.count === 2);
    expect(state.plugins['moving']).toMatchObject({ status: 'installed', revision: head, change: 'upgraded' });
    expect(state.counters.pluginUpgrades).toBe(1);
    expect((await store.trackingRows.list(id))[0]?.revision).toBe(head);
    expect(readFileSync(join(pluginDir(id, 'moving'), 'SKILL.md'), 'utf8')).toContain('second edition');
  });
});
