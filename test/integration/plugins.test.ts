/** Plugin staging and the local box driver on their own (temporary git repositories, runtime processes). */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalBoxDriver } from '../../activities/box/local.js';
import { PermanentPluginError } from '../../activities/plugins/errors.js';
import { parsePluginSource, type SourceSettings } from '../../activities/plugins/source.js';
import { pruneCache, stagePlugin, type StageSettings } from '../../activities/plugins/stage.js';
import { commitAll, createPluginRepo } from '../helpers/git.js';
import { fileScratchDir } from '../helpers/scratch.js';

const root = fileScratchDir('plugins');

const settings: SourceSettings & StageSettings = {
  giteaBaseUrl: 'https://git.example.test',
  githubBaseUrl: 'https://github.example.test',
  allowUnpinned: false,
  sourceHosts: null,
  fileRoots: ['/srv/repos', root],
  urlPolicy: { allowLoopback: false, allowPrivate: false },
  cacheDir: join(root, 'cache'),
  pluginsDir: join(root, 'plugins'),
  maxPluginBytes: 64 * 1024,
  fetchTimeoutMs: 30_000,
  cacheMaxAgeMs: 24 * 3_600_000,
};

describe('staging', () => {
  const repos = join(root, 'repos');

  it('resolves a branch and a tag to the commit and stages once per revision', async () => {
    const commit = createPluginRepo(repos, 'acme', 'seo');
    const source = parsePluginSource(`git+file://${repos}/acme/seo.git#main`, settings);
    const first = await stagePlugin(source, settings);
    expect(first).toMatchObject({ pluginName: 'seo', revision: commit });
    expect(readFileSync(join(first.path, 'plugin.yaml'), 'utf8')).toContain('name: seo');
    expect(existsSync(join(first.path, '.git'))).toBe(false);
    const byTag = await stagePlugin(parsePluginSource(`git+file://${repos}/acme/seo.git#v1`, settings), settings);
    expect(byTag).toEqual(first);
    const bySha = await stagePlugin(
      parsePluginSource(`git+file://${repos}/acme/seo.git#${commit}`, settings),
      settings,
    );
    expect(bySha.path).toBe(first.path);
  });

  it("the cache drops revisions nobody staged for its age limit and dead stagers' work folders", async () => {
    const cache = { ...settings, cacheDir: join(root, 'pruned-cache') };
    createPluginRepo(repos, 'acme', 'kept');
    const kept = await stagePlugin(parsePluginSource(`git+file://${repos}/acme/kept.git#main`, settings), cache);
    const hour = 3_600_000;
    const aged = (name: string, ageMs: number): void => {
      mkdirSync(join(cache.cacheDir, name), { recursive: true });
      const at = new Date(Date.now() - ageMs);
      utimesSync(join(cache.cacheDir, name), at, at);
    };
    aged('git-stale', 25 * hour);
    aged('git-recent', 23 * hour);
    aged('.fetch-dead', 2 * hour);
    aged('.fetch-busy', 0);
    // A reused revision is touched by its stage, so an old one that is still wanted stays.
    const old = new Date(Date.now() - 30 * hour);
    utimesSync(kept.path, old, old);
    await stagePlugin(parsePluginSource(`git+file://${repos}/acme/kept.git#main`, settings), cache);

    expect((await pruneCache(cache)).sort()).toEqual(['.fetch-dead', 'git-stale']);
    expect(readdirSync(cache.cacheDir).sort()).toEqual(['.fetch-busy', basename(kept.path), 'git-recent'].sort());
  });

  it('stages a subpath of a repository', async () => {
    const dir = join(repos, 'acme', 'mono.git');
    createPluginRepo(repos, 'acme', 'mono');
    mkdirSync(join(dir, 'skills', 'seo-all'), { recursive: true });
    writeFileSync(join(dir, 'skills', 'seo-all', 'plugin.yaml'), 'name: seo-all\n');
    commitAll(dir, 'add a plugin in a subpath');
    const staged = await stagePlugin(
      parsePluginSource('gitea://acme/mono/skills/seo-all#main', { ...settings, giteaBaseUrl: `file://${repos}` }),
      settings,
    );
    expect(staged.pluginName).toBe('seo-all');
    expect(readFileSync(join(staged.path, 'plugin.yaml'), 'utf8')).toBe('name: seo-all\n');
  });

  it('rejects a missing ref, a wrong manifest name and an oversized plugin permanently', async () => {
    createPluginRepo(repos, 'acme', 'big');
    writeFileSync(join(repos, 'acme', 'big.git', 'blob.bin'), Buffer.alloc(128 * 1024));
    commitAll(join(repos, 'acme', 'big.git'), 'grow past the size cap');
    const stage = (raw: string): Promise<unknown> => stagePlugin(parsePluginSource(raw, settings), settings);
    await expect(stage(`git+file://${repos}/acme/seo.git#nope`)).rejects.toThrow(/ref nope not found/);
    await expect(stage(`git+file://${repos}/acme/big.git#main`)).rejects.toThrow(
      /exceeds the plugin size cap of 65536 bytes/,
    );
    createPluginRepo(repos, 'acme', 'liar', { name: 'honest' });
    await expect(stage(`git+file://${repos}/acme/liar.git#main`)).rejects.toThrow(
      /names the plugin "honest", expected "liar"/,
    );
    await expect(stage(`git+file://${repos}/acme/absent.git#main`)).rejects.toBeInstanceOf(PermanentPluginError);
  });

  it('a local plugin is revisioned by its content hash', async () => {
    mkdirSync(join(settings.pluginsDir, 'notes'), { recursive: true });
    writeFileSync(join(settings.pluginsDir, 'notes', 'plugin.yaml'), 'name: notes\n');
    const a = await stagePlugin(parsePluginSource('local://notes', settings), settings);
    expect(a.revision).toMatch(/^sha256:[0-9a-f]{64}$/);
    writeFileSync(join(settings.pluginsDir, 'notes', 'SKILL.md'), 'changed\n');
    const b = await stagePlugin(parsePluginSource('local://notes', settings), settings);
    expect(b.revision).not.toBe(a.revision);
    await expect(stagePlugin(parsePluginSource('local://missing', settings), settings)).rejects.toThrow(
      /no plugin directory missing under/,
    );
  });
});

describe('local box driver', () => {
  const driver = new LocalBoxDriver({
    root: join(root, 'boxes'),
    runtimeCommand: [process.execPath, '-e', 'setInterval(() => {}, 1 << 30)'],
  });

  it('delivers once per revision and restarts once per restart id', async () => {
    const box = await driver.createBox('ws-a');
    const staged = join(root, 'staged-x');
    mkdirSync(staged, { recursive: true });
    writeFileSync(join(staged, 'plugin.yaml'), 'name: x\n');
    const plugin = { pluginName: 'x', revision: 'r1', path: staged };
    expect(await driver.readPluginManifest('ws-a', 'x')).toBeNull();
    expect(await driver.deliverPlugin('ws-a', plugin)).toBe('delivered');
    expect(await driver.deliverPlugin('ws-a', plugin)).toBe('already-present');
    expect(await driver.readPluginManifest('ws-a', 'x')).toBe('name: x\n');
    expect(await driver.deliverPlugin('ws-a', { ...plugin, revision: 'r2' })).toBe('delivered');

    expect(await driver.isRunning('ws-a')).toBe(false);
    expect(await driver.restart('ws-a', 'restart-1')).toBe('restarted');
    expect(await driver.isRunning('ws-a')).toBe(true);
    const pid = readFileSync(join(box, 'runtime.pid'), 'utf8');
    expect(await driver.restart('ws-a', 'restart-1')).toBe('already-restarted');
    expect(readFileSync(join(box, 'runtime.pid'), 'utf8')).toBe(pid);
    expect(await driver.restart('ws-a', 'restart-2')).toBe('restarted');
    expect(readFileSync(join(box, 'runtime.pid'), 'utf8')).not.toBe(pid);
    await driver.stopRuntime('ws-a');
    expect(await driver.isRunning('ws-a')).toBe(false);
  });

  it('lists every plugin in one call with its delivered revision, and removes a plugin whole, once', async () => {
    const box = await driver.createBox('ws-list');
    const staged = join(root, 'staged-y');
    mkdirSync(staged, { recursive: true });
    writeFileSync(join(staged, 'plugin.yaml'), 'name: y\n');
    await driver.deliverPlugin('ws-list', { pluginName: 'y', revision: 'r9', path: staged });
    // One baked into the image (no revision recorded), and a delivery that was cut short.
    mkdirSync(join(box, 'configs/plugins/baked'), { recursive: true });
    writeFileSync(join(box, 'configs/plugins/baked/plugin.yaml'), 'name: baked\nversion: 1.0\n');
    mkdirSync(join(box, 'configs/plugins/z.incoming'), { recursive: true });
    writeFileSync(join(box, 'configs/plugins/z.incoming/plugin.yaml'), 'name: z\n');
    expect(await driver.listPlugins('ws-list')).toEqual([
      { name: 'baked', manifest: 'name: baked\nversion: 1.0\n', revision: null },
      { name: 'y', manifest: 'name: y\n', revision: 'r9' },
    ]);

    // A folder emptied by hand (its .revision left behind) is not the plugin: delivered again.
    rmSync(join(box, 'configs/plugins/y/plugin.yaml'));
    expect(await driver.deliverPlugin('ws-list', { pluginName: 'y', revision: 'r9', path: staged })).toBe('delivered');
    expect(readFileSync(join(box, 'configs/plugins/y/plugin.yaml'), 'utf8')).toBe('name: y\n');

    expect(await driver.removePlugin('ws-list', 'y')).toBe('removed');
    expect(await driver.removePlugin('ws-list', 'y')).toBe('already-absent');
    expect(existsSync(join(box, 'configs/plugins/y'))).toBe(false);
    expect(existsSync(join(box, 'configs/plugins/y.removing'))).toBe(false);
    expect((await driver.listPlugins('ws-list')).map((p) => p.name)).toEqual(['baked']);
    expect(readFileSync(join(box, 'box-events.log'), 'utf8')).toMatch(/remove y\n$/);
  });

  it('writes the boot credential readable by its owner only', async () => {
    const box = await driver.createBox('ws-cred');
    await driver.writeBootCredential('ws-cred', 'first');
    await driver.writeBootCredential('ws-cred', 'second');
    expect(readFileSync(join(box, 'boot-credential'), 'utf8')).toBe('second\n');
    expect(statSync(join(box, 'boot-credential')).mode & 0o777).toBe(0o600);
  });

  it('a missing box is unavailable, not absent', async () => {
    await expect(driver.readPluginManifest('ws-none', 'x')).rejects.toThrow(/box ws-none not found/);
    await expect(driver.listPlugins('ws-none')).rejects.toThrow(/box ws-none not found/);
  });
});
