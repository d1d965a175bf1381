/**
 * Resolves a plugin source to an immutable revision and stages its files in a
 * content-addressed cache (`<cacheDir>/<revision-key>/`). Staging the same revision twice
 * reuses the cached copy, so a retried activity does no second fetch.
 *   git:   the ref resolves to a commit sha (`git ls-remote`); the tree at that commit is staged.
 *   local: the directory's content hash (`sha256:…`) is the revision.
 * The cache stays bounded: a stage touches the revision it reuses, and revisions nobody staged
 * for `cacheMaxAgeMs` are deleted (at most one sweep per 10 minutes per process).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, utimes } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { PermanentPluginError, assertSafePluginName } from './errors.js';
import type { PluginSource } from './source.js';

const run = promisify(execFile);

export interface StageSettings {
  cacheDir: string;
  pluginsDir: string;
  maxPluginBytes: number;
  fetchTimeoutMs: number;
  /** A staged revision nobody staged for this long is deleted from the cache. */
  cacheMaxAgeMs: number;
}

export interface StagedPlugin {
  pluginName: string;
  revision: string;
  path: string;
}

export interface PluginManifest {
  name: string;
  version: string | null;
}

export const MANIFEST_FILE = 'plugin.yaml';

export async function stagePlugin(source: PluginSource, settings: StageSettings): Promise<StagedPlugin> {
  // The sweep first: what it deletes is older than its age limit, and this stage makes its own
  // revision fresh again below, so a revision is never deleted between its stage and delivery.
  if (Date.now() - lastSweep >= SWEEP_EVERY_MS) {
    lastSweep = Date.now();
    await pruneCache(settings);
  }
  const staged = source.kind === 'git' ? await stageGit(source, settings) : await stageLocal(source, settings);
  const now = new Date();
  await utimes(staged.path, now, now);
  return staged;
}

const SWEEP_EVERY_MS = 10 * 60_000;
/** A fetch or copy folder this old belongs to a stager that died. */
const ABANDONED_WORK_MS = 60 * 60_000;
let lastSweep = 0;

/**
 * Deletes the revisions nobody staged for `cacheMaxAgeMs` and the work folders of stagers that
 * died; returns the names it deleted. A folder that cannot be read or deleted stays for the
 * next sweep: the cache is a cache.
 */
export async function pruneCache(settings: StageSettings, now: number = Date.now()): Promise<string[]> {
  const entries = await readdir(settings.cacheDir, { withFileTypes: true }).catch(() => []);
  const deleted: string[] = [];
  for (const entry of entries) {
    if (!entry.isDirectory()) continue;
    const path = join(settings.cacheDir, entry.name);
    const modified = await stat(path).then(
      (info) => info.mtimeMs,
      () => now,
    );
    const limit = entry.name.startsWith('.') ? ABANDONED_WORK_MS : settings.cacheMaxAgeMs;
    if (now - modified <= limit) continue;
    await rm(path, { recursive: true, force: true }).then(
      () => deleted.push(entry.name),
      () => undefined,
    );
  }
  return deleted;
}

async function stageGit(
  source: Extract<PluginSource, { kind: 'git' }>,
  settings: StageSettings,
): Promise<StagedPlugin> {
  const commit = await resolveCommit(source, settings);
  const key = `git-${commit}${source.subpath ? `-${hash(source.subpath).slice(0, 12)}` : ''}`;
  const path = join(settings.cacheDir, key);
  if (await exists(path)) return { pluginName: source.name, revision: commit, path };

  await mkdir(settings.cacheDir, { recursive: true });
  const work = await mkdtemp(join(settings.cacheDir, '.fetch-'));
  try {
    const checkout = join(work, 'repo');
    await git(['init', '-q', checkout], settings);
    await git(['-C', checkout, 'fetch', '-q', '--depth=1', source.url, commit], settings, source);
    await git(['-C', checkout, 'checkout', '-q', 'FETCH_HEAD'], settings);
    const root = source.subpath ? join(checkout, source.subpath) : checkout;
    if (!(await exists(root)))
      throw new PermanentPluginError(`${source.raw}: path ${source.subpath ?? ''} does not exist at ${commit}`);
    await rm(join(root, '.git'), { recursive: true, force: true });
    await validateTree(root, source.name, source.raw, settings);
    await publish(root, path);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return { pluginName: source.name, revision: commit, path };
}

async function stageLocal(
  source: Extract<PluginSource, { kind: 'local' }>,
  settings: StageSettings,
): Promise<StagedPlugin> {
  const from = join(settings.pluginsDir, source.name);
  if (!(await exists(from))) {
    throw new PermanentPluginError(`${source.raw}: no plugin directory ${source.name} under ${settings.pluginsDir}`);
  }
  await validateTree(from, source.name, source.raw, settings);
  const revision = `sha256:${await treeHash(from)}`;
  const path = join(settings.cacheDir, `local-${revision.slice('sha256:'.length)}`);
  if (!(await exists(path))) {
    await mkdir(settings.cacheDir, { recursive: true });
    const work = await mkdtemp(join(settings.cacheDir, '.copy-'));
    try {
      await cp(from, join(work, 'tree'), { recursive: true });
      await publish(join(work, 'tree'), path);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }
  return { pluginName: source.name, revision, path };
}

/** Branch, tag (peeled) or full sha → commit sha. A ref the remote lacks is permanent. */
async function resolveCommit(source: Extract<PluginSource, { kind: 'git' }>, settings: StageSettings): Promise<string> {
  const ref = source.ref ?? 'HEAD';
  if (/^[0-9a-f]{40}$/.test(ref)) return ref;
  const { stdout } = await git(
    ['ls-remote', source.url, ref, `refs/heads/${ref}`, `refs/tags/${ref}`, `refs/tags/${ref}^{}`],
    settings,
    source,
  );
  const lines = stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => line.split('\t') as [string, string]);
  const pick = (name: string): string | undefined => lines.find(([, refName]) => refName === name)?.[0];
  const commit = pick(`refs/tags/${ref}^{}`) ?? pick(`refs/tags/${ref}`) ?? pick(`refs/heads/${ref}`) ?? pick(ref);
  if (commit === undefined) throw new PermanentPluginError(`${source.raw}: ref ${ref} not found in ${source.url}`);
  return commit;
}

async function git(args: string[], settings: StageSettings, source?: PluginSource): Promise<{ stdout: string }> {
  try {
    return await run('git', args, {
      timeout: settings.fetchTimeoutMs,
      maxBuffer: 16 * 1024 * 1024,
      env: { ...process.env, GIT_TERMINAL_PROMPT: '0' },
    });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim() ?? '';
    const message = `git ${args[0] === '-C' ? (args[2] ?? '') : (args[0] ?? '')} failed${source ? ` for ${source.raw}` : ''}: ${stderr || String(err)}`;
    // A repository that does not exist will not appear by retrying; network trouble may pass.
    if (/does not appear to be a git repository|repository .* not found|not found/i.test(stderr)) {
      throw new PermanentPluginError(message);
    }
    throw new Error(message);
  }
}

/** The tree must carry a plugin.yaml whose name is the declared name, within the size cap. */
async function validateTree(root: string, name: string, raw: string, settings: StageSettings): Promise<void> {
  const manifest = await readManifest(join(root, MANIFEST_FILE));
  if (manifest === null) throw new PermanentPluginError(`${raw}: no ${MANIFEST_FILE} at the plugin root`);
  assertSafePluginName(manifest.name, `${raw}: ${MANIFEST_FILE} name`);
  if (manifest.name !== name) {
    throw new PermanentPluginError(
      `${raw}: ${MANIFEST_FILE} names the plugin ${JSON.stringify(manifest.name)}, expected ${JSON.stringify(name)}`,
    );
  }
  const bytes = await treeSize(root);
  if (bytes > settings.maxPluginBytes) {
    throw new PermanentPluginError(
      `${raw}: ${bytes} bytes exceeds the plugin size cap of ${settings.maxPluginBytes} bytes`,
    );
  }
}

export async function readManifest(file: string): Promise<PluginManifest | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return null;
  }
  return parseManifest(text);
}

/** Parses plugin.yaml; anything without a string `name` is not a manifest. */
export function parseManifest(text: string): PluginManifest | null {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch {
    return null;
  }
  if (typeof doc !== 'object' || doc === null) return null;
  const { name, version } = doc as { name?: unknown; version?: unknown };
  if (typeof name !== 'string' || name === '') return null;
  return { name, version: typeof version === 'string' || typeof version === 'number' ? String(version) : null };
}

async function publish(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    // Another stager published the same revision first: theirs is identical.
    if (!(await exists(to))) throw err;
  }
}

async function files(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name))
    .sort();
}

async function treeSize(root: string): Promise<number> {
  let total = 0;
  for (const file of await files(root)) total += (await stat(file)).size;
  return total;
}

async function treeHash(root: string): Promise<string> {
  const digest = createHash('sha256');
  for (const file of await files(root)) {
    digest
      .update(relative(root, file))
      .update('\0')
      .update(await readFile(file))
      .update('\0');
  }
  return digest.digest('hex');
}

function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
