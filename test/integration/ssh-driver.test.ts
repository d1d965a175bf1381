/**
 * The SSH box driver against a real OpenSSH server: a throwaway `sshd` on a free loopback port
 * with its own host key and one authorized throwaway client key, logging in as the user the
 * test runs as (root in CI, allowed by key only). Without sshd the tests are skipped with the
 * reason, except in CI, where they fail.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { BoxUnavailableError, isPermanentBoxError } from '../../activities/box/driver.js';
import { parsePluginListing, SshBoxDriver } from '../../activities/box/ssh.js';
import type { SshBoxSettings } from '../../activities/box/ssh-settings.js';
import { createReconcileActivities } from '../../activities/reconcile.js';
import { createLifecycleActivities } from '../../activities/lifecycle.js';
import { LocalBoxDriver } from '../../activities/box/local.js';
import { BoxRouter } from '../../activities/box/router.js';
import { hashSecret } from '../../db/secrets.js';
import { connectTestStore, ensureWorkspace } from '../helpers/postgres.js';
import type { Store } from '../../db/store.js';
import type { SourceSettings } from '../../activities/plugins/source.js';
import type { StageSettings } from '../../activities/plugins/stage.js';
import { freePort, keygen } from '../../scripts/sshd.js';
import { failure } from '../helpers/failure.js';
import { startTestSshd } from '../helpers/sshd.js';
import { BOX_RUNTIME_SCRIPT, boxRuntimeScript } from '../../simulator/ssh.js';
import { fileScratchDir } from '../helpers/scratch.js';

const work = fileScratchDir('ssh-test');
const testSshd = await startTestSshd(work, 'the SSH box driver tests');
const sshd = testSshd?.sshd ?? null;
const keyDir = testSshd?.keyDir ?? join(work, 'keys');

// Keys nobody trusts: a client key the box does not authorize, a host key the box does not have.
const strangerKey = sshd === null ? 'ssh-ed25519 AAAA' : keygen(join(keyDir, 'stranger'), 'wl-ssh-test');
const otherHostKey = sshd === null ? 'ssh-ed25519 AAAA' : keygen(join(work, 'other_host_ed25519'), 'wl-ssh-test');
const closedPort = await freePort();
const user = userInfo().username;

function box(name: string): string {
  const root = join(work, 'boxes', name);
  mkdirSync(join(root, 'configs', 'plugins'), { recursive: true });
  return root;
}

function settingsFor(overrides: Partial<SshBoxSettings> = {}): SshBoxSettings {
  return {
    host: '127.0.0.1',
    port: sshd?.port ?? 1,
    user,
    keyRef: 'client',
    hostKey: sshd?.hostKey ?? strangerKey,
    root: box('main'),
    // A runtime left running in the background, as a real restart would leave one.
    restartCommand:
      '[ -f runtime.pid ] && kill "$(cat runtime.pid)" 2>/dev/null; echo restarted >> restarts.txt; sleep 120 & echo $! > runtime.pid',
    runningCommand: '[ -f runtime.pid ] && kill -0 "$(cat runtime.pid)" 2>/dev/null',
    // Like a service manager, stopping forgets the runtime (a killed child may linger unreaped).
    stopCommand: 'kill "$(cat runtime.pid)" && rm -f runtime.pid',
    ...overrides,
  };
}

function withoutStopCommand(settings: SshBoxSettings): SshBoxSettings {
  const copy = { ...settings };
  delete copy.stopCommand;
  return copy;
}

const workspaces = new Map<string, SshBoxSettings>([
  ['ws-main', settingsFor()],
  ['ws-no-stop', withoutStopCommand(settingsFor({ root: box('no-stop') }))],
  ['ws-no-root', settingsFor({ root: join(work, 'boxes', 'never-made') })],
  ['ws-closed', settingsFor({ port: closedPort })],
  ['ws-rebuilt', settingsFor({ hostKey: otherHostKey })],
  ['ws-stranger', settingsFor({ keyRef: 'stranger' })],
  ['ws-no-key', settingsFor({ keyRef: 'not-there' })],
]);

const driver = new SshBoxDriver({
  resolve: (workspaceId) => Promise.resolve(workspaces.get(workspaceId) ?? null),
  keyDir,
});

afterAll(async () => {
  await driver.close();
  for (const name of ['main', 'no-stop']) {
    const pidFile = join(work, 'boxes', name, 'runtime.pid');
    const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : 0;
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
  }
  await sshd?.stop();
});

function stage(name: string, files: Record<string, string | Buffer>): string {
  const dir = join(work, 'staged', `${name}-${randomBytes(4).toString('hex')}`);
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(dir, path, '..'), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
  return dir;
}

describe.skipIf(sshd === null)('SSH box driver against a real sshd', () => {
  const root = box('main');
  const plugins = join(root, 'configs', 'plugins');

  it('probes: absent, then a plugin baked into the box (listing skips deliveries and removals under way)', async () => {
    expect(await driver.readPluginManifest('ws-main', 'baked')).toBeNull();
    expect(await driver.listPlugins('ws-main')).toEqual([]);

    const manifest = 'name: baked\nversion: "1.0"\ndescription: "naïve — ünïcode"\n\n\n';
    mkdirSync(join(plugins, 'baked'));
    writeFileSync(join(plugins, 'baked', 'plugin.yaml'), manifest);
    for (const transient of ['half.incoming', 'old.removing', '.hidden'])
      mkdirSync(join(plugins, transient), { recursive: true });
    writeFileSync(join(plugins, 'half.incoming', 'plugin.yaml'), 'name: half\n');
    writeFileSync(join(plugins, 'old.removing', 'plugin.yaml'), 'name: old\n');
    writeFileSync(join(plugins, '.hidden', 'plugin.yaml'), 'name: hidden\n');
    mkdirSync(join(plugins, 'no-manifest'));

    expect(await driver.readPluginManifest('ws-main', 'baked')).toBe(manifest);
    expect(await driver.listPlugins('ws-main')).toEqual([{ name: 'baked', manifest, revision: null }]);
  });

  it('delivers a staged tree whole, once per revision, and replaces it for a new one', async () => {
    const big = randomBytes(3 * 1024 * 1024);
    const first = stage('notes', { 'plugin.yaml': 'name: notes\n', 'lib/old.txt': 'old\n', 'data.bin': big });
    const plugin = { pluginName: 'notes', revision: 'a'.repeat(40), path: first };
    expect(await driver.deliverPlugin('ws-main', plugin)).toBe('delivered');
    expect(readFileSync(join(plugins, 'notes', 'data.bin')).equals(big)).toBe(true);
    expect(readFileSync(join(plugins, 'notes', '.revision'), 'utf8')).toBe(plugin.revision);
    expect(await driver.deliverPlugin('ws-main', plugin)).toBe('already-present');
    // A folder emptied by hand (its .revision left behind) is not the plugin: delivered again.
    rmSync(join(plugins, 'notes', 'plugin.yaml'));
    expect(await driver.deliverPlugin('ws-main', plugin)).toBe('delivered');
    expect(readFileSync(join(plugins, 'notes', 'plugin.yaml'), 'utf8')).toBe('name: notes\n');

    const second = stage('notes', { 'plugin.yaml': 'name: notes\nversion: 2\n', 'lib/new.txt': 'new\n' });
    expect(await driver.deliverPlugin('ws-main', { ...plugin, revision: 'b'.repeat(40), path: second })).toBe(
      'delivered',
    );
    expect(existsSync(join(plugins, 'notes', 'lib', 'old.txt'))).toBe(false);
    expect(readFileSync(join(plugins, 'notes', 'lib', 'new.txt'), 'utf8')).toBe('new\n');
    expect(existsSync(join(plugins, 'notes.incoming'))).toBe(false);

    const listed = await driver.listPlugins('ws-main');
    expect(listed.map((p) => [p.name, p.revision])).toEqual([
      ['baked', null],
      ['notes', 'b'.repeat(40)],
    ]);
    const events = readFileSync(join(root, 'box-events.log'), 'utf8');
    expect(events.match(/ deliver notes /g)).toHaveLength(3);
  });

  it('a staged tree that cannot be read fails the delivery (retryable) and leaves the plugin as it was', async () => {
    const gone = { pluginName: 'notes', revision: 'c'.repeat(40), path: join(work, 'staged', 'never-staged') };
    const err = await failure(driver.deliverPlugin('ws-main', gone));
    expect(isPermanentBoxError(err)).toBe(false);
    expect(String(err)).toMatch(/staged plugin notes at .*never-staged: cannot be read/);
    expect(readFileSync(join(plugins, 'notes', '.revision'), 'utf8')).toBe('b'.repeat(40));
  });

  it('removes a plugin whole; a second removal finds it absent', async () => {
    expect(await driver.removePlugin('ws-main', 'notes')).toBe('removed');
    expect(existsSync(join(plugins, 'notes'))).toBe(false);
    expect(existsSync(join(plugins, 'notes.removing'))).toBe(false);
    expect(await driver.removePlugin('ws-main', 'notes')).toBe('already-absent');
    expect(await driver.readPluginManifest('ws-main', 'notes')).toBeNull();
  });

  it('writes the boot credential readable by its owner only, replacing the one before', async () => {
    await driver.writeBootCredential('ws-main', 'first-credential');
    await driver.writeBootCredential('ws-main', 'boot-credential-2');
    const file = join(root, 'boot-credential');
    expect(readFileSync(file, 'utf8')).toBe('boot-credential-2\n');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(existsSync(`${file}.tmp`)).toBe(false);
  });

  it('restarts once per restart id, reports running, and stops', async () => {
    const restarts = (): number =>
      existsSync(join(root, 'restarts.txt'))
        ? readFileSync(join(root, 'restarts.txt'), 'utf8').split('\n').length - 1
        : 0;
    expect(await driver.isRunning('ws-main')).toBe(false);

    const began = Date.now();
    expect(await driver.restart('ws-main', 'restart-1')).toBe('restarted');
    // The runtime left in the background does not keep the restart waiting.
    expect(Date.now() - began).toBeLessThan(10_000);
    expect(await driver.isRunning('ws-main')).toBe(true);
    expect(await driver.restart('ws-main', 'restart-1')).toBe('already-restarted');
    expect(restarts()).toBe(1);
    expect(await driver.restart('ws-main', 'restart-2')).toBe('restarted');
    expect(restarts()).toBe(2);
    expect(readFileSync(join(root, 'box-events.log'), 'utf8')).toMatch(/ restart restart-2\n/);

    expect(await driver.stop('ws-main')).toBe('stopped');
    expect(await driver.isRunning('ws-main')).toBe(false);
    expect(await driver.stop('ws-main')).toBe('already-stopped');
  });

  it('shares one connection per box: further calls log in no more', async () => {
    const logins = (): number => (readFileSync(sshd?.log ?? '', 'utf8').match(/Accepted publickey/g) ?? []).length;
    await driver.listPlugins('ws-main');
    const before = logins();
    await Promise.all([1, 2, 3, 4, 5].map(() => driver.listPlugins('ws-main')));
    await driver.isRunning('ws-main');
    expect(logins()).toBe(before);
  });

  it('a failing restart command is a retryable error carrying its output', async () => {
    workspaces.set(
      'ws-bad-restart',
      settingsFor({ root: box('bad-restart'), restartCommand: 'echo boom >&2; exit 3' }),
    );
    const err = await failure(driver.restart('ws-bad-restart', 'restart-1'));
    expect(err).toBeInstanceOf(Error);
    expect(isPermanentBoxError(err)).toBe(false);
    expect(String(err)).toMatch(/restart command exited with 3:.*boom/);
    // Not recorded as done: the retry runs it again.
    expect(existsSync(join(work, 'boxes', 'bad-restart', '.restart-id'))).toBe(false);
  });

  it('stopping a running box without a stop command is a permanent error naming the fix', async () => {
    expect(await driver.stop('ws-no-stop')).toBe('already-stopped');
    expect(await driver.restart('ws-no-stop', 'restart-1')).toBe('restarted');
    const err = await failure(driver.stop('ws-no-stop'));
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect(err).toMatchObject({ type: 'BoxStopUnsupported', nonRetryable: true });
    expect(String(err)).toMatch(/stopCommand/);
  });

  it('an unreachable box (closed port) is BoxUnavailableError, which is retried', async () => {
    const err = await failure(driver.listPlugins('ws-closed'));
    expect(err).toBeInstanceOf(BoxUnavailableError);
    expect(isPermanentBoxError(err)).toBe(false);
    expect(String(err)).toMatch(/Connection refused/);
  });

  it('a box whose directory is missing, or a workspace without SSH settings, is BoxUnavailableError', async () => {
    const missing = await failure(driver.readPluginManifest('ws-no-root', 'notes'));
    expect(missing).toBeInstanceOf(BoxUnavailableError);
    expect(String(missing)).toMatch(/does not exist/);
    const none = await failure(driver.isRunning('ws-unknown'));
    expect(none).toBeInstanceOf(BoxUnavailableError);
    expect(String(none)).toMatch(/workspace ws-unknown has no SSH settings/);
  });

  it('a host key other than the pinned one fails permanently, naming the fix', async () => {
    const err = await failure(driver.listPlugins('ws-rebuilt'));
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect(err).toMatchObject({ type: 'BoxHostKeyMismatch', nonRetryable: true });
    expect(String(err)).toMatch(
      new RegExp(`host key of ${user}@127\\.0\\.0\\.1:${sshd?.port ?? 0} does not match the pinned key`),
    );
    expect(String(err)).toMatch(/set its new host key with PUT \/workspaces\/ws-rebuilt\/box/);
  });

  it('a client key the box does not accept fails permanently, naming the key and user', async () => {
    const err = await failure(driver.isRunning('ws-stranger'));
    expect(err).toMatchObject({ type: 'BoxAuthRefused', nonRetryable: true });
    expect(String(err)).toMatch(new RegExp(`refused the key "stranger" for user ${user}`));
  });

  it('a key file missing from the key directory fails permanently before connecting', async () => {
    const err = await failure(driver.restart('ws-no-key', 'restart-1'));
    expect(err).toMatchObject({ type: 'BoxKeyMissing', nonRetryable: true });
    expect(String(err)).toMatch(/"not-there".*key directory/);
  });

  it('a key file others can read fails permanently', async () => {
    const loose = join(keyDir, 'loose');
    writeFileSync(loose, readFileSync(join(keyDir, 'client')));
    chmodSync(loose, 0o644);
    workspaces.set('ws-loose-key', settingsFor({ keyRef: 'loose' }));
    const err = await failure(driver.listPlugins('ws-loose-key'));
    expect(err).toMatchObject({ type: 'BoxKeyUnusable', nonRetryable: true });
  });

  it("the reconcile's probe reads an unreachable box as uncertain, but lets permanent box errors through", async () => {
    const activities = createReconcileActivities({
      // The probe reads the box only; the store is never touched.
      store: null as unknown as Store,
      driver,
      sources: {} as SourceSettings & StageSettings,
    });
    expect(await activities.probePlugin({ workspaceId: 'ws-main', pluginName: 'baked' })).toEqual({
      presence: 'present',
      revision: 'version:1.0',
    });
    expect(await activities.probePlugin({ workspaceId: 'ws-closed', pluginName: 'baked' })).toMatchObject({
      presence: 'uncertain',
    });
    const err = await failure(activities.probePlugin({ workspaceId: 'ws-rebuilt', pluginName: 'baked' }));
    expect(err).toMatchObject({ type: 'BoxHostKeyMismatch', nonRetryable: true });
  });
});

describe.skipIf(sshd === null)("the simulator's box-runtime.sh (npm run simulate -- --ssh)", () => {
  it('restarts, reports and stops a runtime over SSH, recording runtime.pid as the local driver reads it', async () => {
    const root = box('simulated');
    writeFileSync(
      join(root, BOX_RUNTIME_SCRIPT),
      boxRuntimeScript({
        workspaceId: 'ws-simulated',
        boxDir: root,
        apiUrl: 'http://127.0.0.1:1',
        runtimeCommand: ['sleep', '120'],
      }),
    );
    const run = (action: string): string => `/bin/sh ./${BOX_RUNTIME_SCRIPT} ${action}`;
    workspaces.set(
      'ws-simulated',
      settingsFor({ root, restartCommand: run('restart'), runningCommand: run('running'), stopCommand: run('stop') }),
    );
    // The local driver of the same folder: what the simulator's kill and cleanup read.
    const local = new LocalBoxDriver({ root: join(work, 'boxes'), runtimeCommand: null });
    expect(await driver.isRunning('ws-simulated')).toBe(false);

    expect(await driver.restart('ws-simulated', 'restart-1')).toBe('restarted');
    const first = await local.runtimeRecord('simulated');
    expect(first?.launchId).toMatch(/^ssh-/);
    expect(await local.liveRuntimePid('simulated')).toBe(first?.pid);
    expect(await driver.isRunning('ws-simulated')).toBe(true);
    expect(readFileSync(join(root, 'restart.log'), 'utf8')).toMatch(/runtime started over SSH: pid \d+/);

    expect(await driver.restart('ws-simulated', 'restart-2')).toBe('restarted');
    const second = await local.runtimeRecord('simulated');
    expect(second?.pid).not.toBe(first?.pid);
    expect(await local.liveRuntimePid('simulated')).toBe(second?.pid);

    expect(await driver.stop('ws-simulated')).toBe('stopped');
    expect(await driver.isRunning('ws-simulated')).toBe(false);
    expect(await local.liveRuntimePid('simulated')).toBeNull();
    expect(await driver.stop('ws-simulated')).toBe('already-stopped');
  });
});

describe.skipIf(sshd === null)("the worker's box router", () => {
  it('a workspace whose stored settings say ssh is restarted over SSH, its boot credential written there; others stay local', async () => {
    const store = await connectTestStore();
    const local = new LocalBoxDriver({ root: join(work, 'local-boxes'), runtimeCommand: null });
    const router = new BoxRouter(local, (workspaceId) => store.boxSettings.read(workspaceId), keyDir);
    try {
      const id = `ssh-routed-${randomBytes(4).toString('hex')}`;
      const root = box('routed');
      await ensureWorkspace(store, id);
      expect(await store.boxSettings.set(id, { driver: 'ssh', ...settingsFor({ root }) })).toBe(true);
      const lifecycle = createLifecycleActivities({ store, driver: router });
      const input = { workspaceId: id, restartId: 'restart-routed' };
      const restarted = await new MockActivityEnvironment().run((i: typeof input) => lifecycle.restartBox(i), input);
      expect(restarted).toBe('restarted');
      expect(readFileSync(join(root, 'restarts.txt'), 'utf8')).toBe('restarted\n');
      const credential = readFileSync(join(root, 'boot-credential'), 'utf8').trim();
      expect(await store.bootCredentials.hash(id)).toEqual(hashSecret(credential));
      expect(await router.isRunning(id)).toBe(true);
      expect(await router.stop(id)).toBe('stopped');

      const other = `local-routed-${randomBytes(4).toString('hex')}`;
      await ensureWorkspace(store, other);
      expect(await router.driverFor(other)).toBe(local);

      // Settings stored by hand that do not hold: a permanent error naming the route that fixes them.
      await store.boxSettings.set(other, { driver: 'ssh', host: '127.0.0.1' });
      const err = await failure(router.listPlugins(other));
      expect(err).toMatchObject({ type: 'BoxSettingsInvalid', nonRetryable: true });
      expect((err as Error).message).toContain(`PUT /workspaces/${other}/box`);
    } finally {
      await router.close();
      await store.close();
    }
  });
});

describe('plugin listing', () => {
  it('the listing framing survives newlines and multibyte text, and rejects a torn listing', () => {
    const manifest = 'name: x\nnote: "ü"\n\n';
    const frame = Buffer.concat([
      Buffer.from(`1 ${Buffer.byteLength(manifest)} 3\nx`),
      Buffer.from(manifest),
      Buffer.from('abc'),
      Buffer.from(`1 7 -\nyname: y`),
    ]);
    expect(parsePluginListing(frame)).toEqual([
      { name: 'x', manifest, revision: 'abc' },
      { name: 'y', manifest: 'name: y', revision: null },
    ]);
    expect(() => parsePluginListing(Buffer.from('1 99 -\nx'))).toThrow(/ends early/);
    expect(() => parsePluginListing(Buffer.from('garbage\n'))).toThrow(/unreadable/);
  });
});
