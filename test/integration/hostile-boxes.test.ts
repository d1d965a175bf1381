/**
 * A box folder is the runtime's: it runs there (as the same user for the local driver, as the
 * box's user over SSH) and can plant links, fifos and huge files where the driver reads and
 * writes. Through both drivers (SSH against a real sshd), nothing outside the box changes and
 * nothing is read through a link: a link where the driver reads or where a folder must be is
 * refused (BoxUnsafePath, naming the path), a link where it writes a fresh file is replaced, and
 * every read is capped (BoxOutputTooLarge, naming the cap). The local driver's runtimes see an
 * allow-list of the worker's environment, never its secrets.
 */
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MAX_LISTING_BYTES, MAX_RECORD_BYTES, type BoxDriver } from '../../activities/box/driver.js';
import { MAX_MANIFEST_BYTES } from '../../activities/plugins/stage.js';
import { LocalBoxDriver } from '../../activities/box/local.js';
import { SshBoxDriver } from '../../activities/box/ssh.js';
import { makeVictim, snapshot } from '../helpers/hostile.js';
import { failure } from '../helpers/failure.js';
import { startTestSshd } from '../helpers/sshd.js';
import { runtimePassEnvFromEnv } from '../../settings.js';
import { fileScratchDir } from '../helpers/scratch.js';

const work = fileScratchDir('hostile-boxes');
const victim = makeVictim(join(work, 'victim'));
const testSshd = await startTestSshd(work, 'the hostile box tests over SSH');
const sshRoots = join(work, 'ssh-boxes');

const ssh = new SshBoxDriver({
  resolve: (workspaceId) =>
    Promise.resolve(
      testSshd?.settings(join(sshRoots, workspaceId), {
        restartCommand: 'echo restarted >> restarts.txt',
        runningCommand: 'true',
      }) ?? null,
    ),
  keyDir: testSshd?.keyDir ?? work,
});
const localRoot = join(work, 'local-boxes');
const local = new LocalBoxDriver({ root: localRoot, runtimeCommand: null });
/** Runs `sleep` as each box's runtime, with the variables its operator passes it. */
const withRuntime = new LocalBoxDriver({
  root: localRoot,
  runtimeCommand: ['sleep', '120'],
  runtimeEnv: {
    WL_API_URL: 'http://127.0.0.1:9',
    ...runtimePassEnvFromEnv({ WL_RUNTIME_PASS_ENV: 'AGENT_MODEL, NOT_SET', AGENT_MODEL: 'small' }),
  },
});
const runtimes: string[] = [];

afterAll(async () => {
  for (const id of runtimes) await withRuntime.stopRuntime(id).catch(() => undefined);
  await ssh.close();
  await testSshd?.sshd.stop();
});

interface DriverUnderTest {
  name: 'local' | 'ssh';
  driver: BoxDriver;
  skip: boolean;
  /** Makes the workspace's box folder (with `configs/plugins`) and returns it. */
  box: (workspaceId: string) => Promise<string>;
}

const drivers: DriverUnderTest[] = [
  { name: 'local', driver: local, skip: false, box: (id) => local.createBox(id) },
  {
    name: 'ssh',
    driver: ssh,
    skip: testSshd === null,
    box: (id) => {
      const root = join(sshRoots, id);
      mkdirSync(join(root, 'configs', 'plugins'), { recursive: true });
      return Promise.resolve(root);
    },
  },
];

function expectRefused(err: unknown, type: 'BoxUnsafePath' | 'BoxOutputTooLarge', mention: string): void {
  expect(err).toMatchObject({ type, nonRetryable: true });
  expect((err as Error).message).toContain(mention);
}

/** A real plugin folder in the box, with its manifest. */
function plugin(box: string, name: string, manifest = `name: ${name}\n`): string {
  const dir = join(box, 'configs', 'plugins', name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'plugin.yaml'), manifest);
  return dir;
}

/** A link at `path` (its folders made) to `target`. */
function plant(path: string, target: string): void {
  mkdirSync(dirname(path), { recursive: true });
  rmSync(path, { recursive: true, force: true });
  symlinkSync(target, path);
}

/** A clean staged tree for `name`. */
function staged(name: string): { pluginName: string; revision: string; path: string } {
  const path = join(work, 'staged', name);
  mkdirSync(path, { recursive: true });
  writeFileSync(join(path, 'plugin.yaml'), `name: ${name}\n`);
  return { pluginName: name, revision: 'e'.repeat(40), path };
}

describe.each(drivers)('a box folder with traps in it, through the $name driver', ({ name, driver, skip, box }) => {
  const test = it.skipIf(skip);
  const id = (what: string): string => `${name}-${what}`;

  test('a linked .revision is never read: delivery and listing are refused, naming it', async () => {
    const root = await box(id('revision'));
    plant(join(plugin(root, 'notes'), '.revision'), victim.file);
    const before = snapshot(victim.root);
    expectRefused(
      await failure(driver.deliverPlugin(id('revision'), staged('notes'))),
      'BoxUnsafePath',
      'configs/plugins/notes/.revision',
    );
    expectRefused(await failure(driver.listPlugins(id('revision'))), 'BoxUnsafePath', 'notes/.revision');
    expect(snapshot(victim.root)).toBe(before);
  });

  test('a linked manifest is refused by the probe and the listing, naming it', async () => {
    const root = await box(id('manifest'));
    mkdirSync(join(root, 'configs', 'plugins', 'linked'));
    plant(join(root, 'configs', 'plugins', 'linked', 'plugin.yaml'), join(victim.dir, 'plugin.yaml'));
    expectRefused(
      await failure(driver.readPluginManifest(id('manifest'), 'linked')),
      'BoxUnsafePath',
      'configs/plugins/linked/plugin.yaml',
    );
    expectRefused(await failure(driver.listPlugins(id('manifest'))), 'BoxUnsafePath', 'linked/plugin.yaml');
  });

  test('a fifo for a manifest is refused at once, not waited on', async () => {
    const root = await box(id('fifo'));
    mkdirSync(join(root, 'configs', 'plugins', 'piped'));
    execFileSync('mkfifo', [join(root, 'configs', 'plugins', 'piped', 'plugin.yaml')]);
    expectRefused(
      await failure(driver.readPluginManifest(id('fifo'), 'piped')),
      'BoxUnsafePath',
      'configs/plugins/piped/plugin.yaml',
    );
  }, 20_000);

  test.each(['configs', 'configs/plugins', 'configs/plugins/linked'])(
    'a link at %s, where a folder must be, is refused by every plugin operation and followed by none',
    async (linkedPath) => {
      const workspaceId = id(`folder-${linkedPath.replaceAll('/', '-')}`);
      const root = await box(workspaceId);
      rmSync(join(root, 'configs'), { recursive: true, force: true });
      mkdirSync(join(root, 'configs', 'plugins'), { recursive: true });
      // Each link leads to a folder where the same path finds the victim's plugin `linked`.
      const target =
        { configs: join(victim.root, 'configs'), 'configs/plugins': victim.root }[linkedPath] ?? victim.dir;
      mkdirSync(join(victim.root, 'configs'), { recursive: true });
      plant(join(victim.root, 'configs', 'plugins'), victim.root);
      plant(join(root, linkedPath), target);
      const before = snapshot(victim.root);
      for (const call of [
        () => driver.readPluginManifest(workspaceId, 'linked'),
        () => driver.listPlugins(workspaceId),
        () => driver.deliverPlugin(workspaceId, staged('linked')),
      ])
        expectRefused(await failure(call()), 'BoxUnsafePath', linkedPath);
      if (linkedPath !== 'configs/plugins/linked')
        expectRefused(await failure(driver.removePlugin(workspaceId, 'linked')), 'BoxUnsafePath', linkedPath);
      else {
        // Taking away a plugin that is a link takes the link away, never what it leads to.
        expect(await driver.removePlugin(workspaceId, 'linked')).toBe('removed');
        expect(existsSync(join(root, linkedPath))).toBe(false);
      }
      expect(snapshot(victim.root)).toBe(before);
      rmSync(join(victim.root, 'configs'), { recursive: true, force: true });
    },
  );

  test('a linked <name>.incoming is replaced by a folder of the driver, never written through', async () => {
    const root = await box(id('incoming'));
    plant(join(root, 'configs', 'plugins', 'notes.incoming'), victim.dir);
    const before = snapshot(victim.root);
    expect(await driver.deliverPlugin(id('incoming'), staged('notes'))).toBe('delivered');
    expect(snapshot(victim.root)).toBe(before);
    expect(readFileSync(join(root, 'configs', 'plugins', 'notes', '.revision'), 'utf8')).toBe('e'.repeat(40));
    expect(lstatSync(join(root, 'configs', 'plugins', 'notes')).isDirectory()).toBe(true);
    expect(existsSync(join(root, 'configs', 'plugins', 'notes.incoming'))).toBe(false);
  });

  test.each([
    ['boot-credential.tmp', 'the victim file'],
    ['boot-credential', 'the victim folder'],
  ])('a linked %s (to %s) is replaced: the credential lands in the box only', async (linkName, what) => {
    const workspaceId = id(`credential-${linkName}`);
    const root = await box(workspaceId);
    plant(join(root, linkName), what === 'the victim file' ? victim.file : victim.dir);
    chmodSync(victim.file, 0o644);
    const before = snapshot(victim.root);
    await driver.writeBootCredential(workspaceId, 'a-new-boot-credential');
    expect(snapshot(victim.root)).toBe(before);
    const file = join(root, 'boot-credential');
    expect(lstatSync(file).isFile()).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8')).toBe('a-new-boot-credential\n');
  });

  test('a linked box-events.log is refused before any work, never appended through', async () => {
    const root = await box(id('events'));
    plant(join(root, 'box-events.log'), victim.file);
    const before = snapshot(victim.root);
    expectRefused(
      await failure(driver.deliverPlugin(id('events'), staged('notes'))),
      'BoxUnsafePath',
      'box-events.log',
    );
    expect(existsSync(join(root, 'configs', 'plugins', 'notes'))).toBe(false);
    expect(snapshot(victim.root)).toBe(before);
  });

  test('a manifest past its cap fails the probe and the listing, naming the cap', async () => {
    const root = await box(id('big-manifest'));
    plugin(root, 'big', `name: big\n#${'x'.repeat(MAX_MANIFEST_BYTES)}\n`);
    expectRefused(
      await failure(driver.readPluginManifest(id('big-manifest'), 'big')),
      'BoxOutputTooLarge',
      `${MAX_MANIFEST_BYTES} bytes`,
    );
    expectRefused(
      await failure(driver.listPlugins(id('big-manifest'))),
      'BoxOutputTooLarge',
      `${MAX_MANIFEST_BYTES} bytes`,
    );
  });

  test('a listing past its cap (every manifest within its own) fails, naming the cap', async () => {
    const root = await box(id('big-listing'));
    const each = MAX_MANIFEST_BYTES - 64;
    for (let i = 0; i <= MAX_LISTING_BYTES / each; i++)
      plugin(root, `p${i}`, `name: p${i}\n#${'x'.repeat(each - 20)}\n`);
    expectRefused(
      await failure(driver.listPlugins(id('big-listing'))),
      'BoxOutputTooLarge',
      `${MAX_LISTING_BYTES} bytes`,
    );
  });

  test('a recorded revision past its cap fails the delivery, naming the cap', async () => {
    const root = await box(id('big-revision'));
    writeFileSync(join(plugin(root, 'notes'), '.revision'), 'r'.repeat(MAX_RECORD_BYTES + 1));
    expectRefused(
      await failure(driver.deliverPlugin(id('big-revision'), staged('notes'))),
      'BoxOutputTooLarge',
      `${MAX_RECORD_BYTES} bytes`,
    );
  });
});

describe('the local driver: runtime files the runtime can plant', () => {
  it.each([
    ['runtime.log', 'refused'],
    ['runtime.pid', 'refused'],
    ['runtime.pid.tmp', 'replaced'],
  ])('a linked %s is %s by a restart, never written or read through', async (linkName, outcome) => {
    const workspaceId = `local-runtime-${linkName.replaceAll('.', '-')}`;
    const root = await withRuntime.createBox(workspaceId);
    plant(join(root, linkName), victim.file);
    const before = snapshot(victim.root);
    runtimes.push(workspaceId);
    const restarted = await withRuntime.restart(workspaceId, 'restart-1').catch((err: unknown) => err);
    if (outcome === 'refused') expectRefused(restarted, 'BoxUnsafePath', linkName);
    else expect(restarted).toBe('restarted');
    expect(snapshot(victim.root)).toBe(before);
    // Without a runtime command the driver writes the process record itself: just as safely.
    await withRuntime.stopRuntime(workspaceId).catch(() => undefined);
    plant(join(root, linkName), victim.file);
    const recorded = await local.restart(workspaceId, 'restart-2').catch((err: unknown) => err);
    if (linkName === 'runtime.pid') expectRefused(recorded, 'BoxUnsafePath', linkName);
    else expect(recorded).toBe('restarted');
    expect(snapshot(victim.root)).toBe(before);
  });

  it('a process record past its cap is refused, naming the cap', async () => {
    const root = await local.createBox('local-big-pid');
    writeFileSync(join(root, 'runtime.pid'), `1 ${'x'.repeat(MAX_RECORD_BYTES)}\n`);
    expectRefused(
      await failure(local.restart('local-big-pid', 'restart-1')),
      'BoxOutputTooLarge',
      `${MAX_RECORD_BYTES} bytes`,
    );
  });

  it("a runtime sees an allow-list of the worker's environment, never its secrets", async () => {
    const secrets = {
      DATABASE_URL: 'postgres://user:db-secret@127.0.0.1/db',
      TEMPORAL_API_KEY: 'temporal-secret',
      WL_ADMIN_TOKEN: 'admin-secret-admin-secret',
      AWS_SECRET_ACCESS_KEY: 'cloud-secret',
    };
    const saved = Object.fromEntries(Object.keys(secrets).map((key) => [key, process.env[key]]));
    Object.assign(process.env, secrets);
    try {
      await withRuntime.createBox('local-env');
      runtimes.push('local-env');
      await withRuntime.startRuntime('local-env');
    } finally {
      for (const [key, value] of Object.entries(saved))
        if (value === undefined) Reflect.deleteProperty(process.env, key);
        else process.env[key] = value;
    }
    const pid = await withRuntime.liveRuntimePid('local-env');
    expect(pid).not.toBeNull();
    const environ = readFileSync(`/proc/${pid ?? 0}/environ`, 'utf8')
      .split('\0')
      .filter(Boolean);
    const names = environ.map((entry) => entry.slice(0, entry.indexOf('=')));
    for (const key of Object.keys(secrets)) expect(names).not.toContain(key);
    expect(environ.join('\n')).not.toMatch(/secret/);
    expect(environ).toContain(`PATH=${process.env['PATH'] ?? ''}`);
    expect(environ).toContain('WORKSPACE_ID=local-env');
    expect(environ).toContain(`WORKSPACE_DIR=${join(localRoot, 'local-env')}`);
    expect(environ).toContain('WL_LAUNCH_ID=boot');
    expect(environ).toContain('WL_API_URL=http://127.0.0.1:9');
    // What the operator passes by name (WL_RUNTIME_PASS_ENV), and only what is set.
    expect(environ).toContain('AGENT_MODEL=small');
    expect(names).not.toContain('NOT_SET');
    expect(() => runtimePassEnvFromEnv({ WL_RUNTIME_PASS_ENV: 'A=B' })).toThrow(/WL_RUNTIME_PASS_ENV/);
  });
});

describe.skipIf(testSshd === null)('the SSH driver: restart files the runtime can plant', () => {
  it('a linked .restart-id is refused; a linked .restart-id.tmp or restart.log is replaced, never written through', async () => {
    const workspaceId = 'ssh-restart-files';
    const root = join(sshRoots, workspaceId);
    mkdirSync(root, { recursive: true });
    plant(join(root, '.restart-id'), victim.file);
    const before = snapshot(victim.root);
    expectRefused(await failure(ssh.restart(workspaceId, 'restart-1')), 'BoxUnsafePath', '.restart-id');
    expect(existsSync(join(root, 'restarts.txt'))).toBe(false);
    rmSync(join(root, '.restart-id'));
    plant(join(root, '.restart-id.tmp'), victim.file);
    plant(join(root, 'restart.log'), victim.file);
    expect(await ssh.restart(workspaceId, 'restart-1')).toBe('restarted');
    expect(snapshot(victim.root)).toBe(before);
    expect(readFileSync(join(root, '.restart-id'), 'utf8')).toBe('restart-1\n');
    expect(lstatSync(join(root, 'restart.log')).isFile()).toBe(true);
    expect(await ssh.restart(workspaceId, 'restart-1')).toBe('already-restarted');
  });
});

describe('the SSH driver: output past its cap', () => {
  it('an ssh that streams without end is stopped at the cap: the worker does not hold the rest', async () => {
    const marker = join(work, 'fake-ssh-finished');
    const fakeSsh = join(work, 'fake-ssh');
    // Whatever it is asked, it answers with 300 MB, then notes that it got to the end.
    writeFileSync(fakeSsh, `#!/bin/sh\nhead -c 300000000 /dev/zero && touch ${marker}\n`, { mode: 0o755 });
    const keyDir = join(work, 'fake-keys');
    mkdirSync(keyDir, { recursive: true });
    writeFileSync(join(keyDir, 'client'), 'not a key\n', { mode: 0o600 });
    const flooding = new SshBoxDriver({
      resolve: () =>
        Promise.resolve({
          host: '127.0.0.1',
          port: 22,
          user: 'agent',
          keyRef: 'client',
          hostKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLEexample',
          root: '/box',
          restartCommand: 'true',
          runningCommand: 'true',
        }),
      keyDir,
      sshPath: fakeSsh,
      shareConnections: false,
    });
    try {
      expectRefused(
        await failure(flooding.readPluginManifest('ws-flood', 'notes')),
        'BoxOutputTooLarge',
        `${MAX_MANIFEST_BYTES} bytes`,
      );
      expectRefused(await failure(flooding.listPlugins('ws-flood')), 'BoxOutputTooLarge', `${MAX_LISTING_BYTES} bytes`);
      expect(existsSync(marker)).toBe(false);
    } finally {
      await flooding.close();
    }
  });
});
