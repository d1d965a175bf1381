/**
 * Resolves a plugin source to an immutable revision and stages its files in a
 * content-addressed cache (`<cacheDir>/<revision-key>/`). Staging the same revision twice
 * reuses the cached copy, so a retried activity does no second fetch.
 *   git:   the ref resolves to a commit sha (`git ls-remote`); the tree at that commit is staged.
 *   local: the directory's content hash (`sha256:…`) is the revision.
 * The cache stays bounded: a stage touches the revision it reuses, and revisions nobody staged
 * for `cacheMaxAgeMs` are deleted (at most one sweep per 10 minutes per process).
 * A staged tree holds regular files and folders only, within the size cap and the tree bounds
 * (tree.ts): a plugin holding a link, fifo or device, or a sub-path that is not a real folder, is
 * refused before anything in it is deleted, copied or published. A cache entry is a real folder.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { PermanentPluginError, assertSafePluginName } from './errors.js';
import type { PluginSource } from './source.js';
import { copyTree, describeEntry, inspectTree, type PluginTree } from './tree.js';

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
/** The most bytes of a plugin.yaml, staged or read from a box. */
export const MAX_MANIFEST_BYTES = 1024 * 1024;

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
  if (await cachedEntry(path)) return { pluginName: source.name, revision: commit, path };

  await mkdir(settings.cacheDir, { recursive: true });
  const work = await mkdtemp(join(settings.cacheDir, '.fetch-'));
  try {
    const checkout = join(work, 'repo');
    await git(['init', '-q', checkout], settings);
    await git(['-C', checkout, 'fetch', '-q', '--depth=1', source.url, commit], settings, source);
    await git(['-C', checkout, 'checkout', '-q', 'FETCH_HEAD'], settings);
    const root = await subpathRoot(checkout, source, commit);
    // The checkout's own .git; git never checks out a `.git` below the root.
    if (root === checkout) await rm(join(root, '.git'), { recursive: true, force: true });
    const tree = await inspectTree(root, source.raw, settings.maxPluginBytes);
    await validateManifest(root, tree, source.name, source.raw);
    await publish(root, path);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return { pluginName: source.name, revision: commit, path };
}

/**
 * The folder a sub-path names inside the checkout, checked before anything in it is touched:
 * each of its parts a real folder, so a part that is a link cannot lead outside the checkout.
 */
async function subpathRoot(
  checkout: string,
  source: Extract<PluginSource, { kind: 'git' }>,
  commit: string,
): Promise<string> {
  if (source.subpath === null) return checkout;
  let at = checkout;
  const walked: string[] = [];
  for (const part of source.subpath.split('/')) {
    at = join(at, part);
    walked.push(part);
    const info = await lstat(at).catch(() => null);
    if (info === null)
      throw new PermanentPluginError(`${source.raw}: path ${source.subpath} does not exist at ${commit}`);
    if (!info.isDirectory())
      throw new PermanentPluginError(
        `${source.raw}: ${walked.join('/')} is ${describeEntry(info)} at ${commit}; a sub-path must name a real folder in the repository`,
      );
  }
  return at;
}

async function stageLocal(
  source: Extract<PluginSource, { kind: 'local' }>,
  settings: StageSettings,
): Promise<StagedPlugin> {
  const from = join(settings.pluginsDir, source.name);
  const info = await lstat(from).catch(() => null);
  if (info === null)
    throw new PermanentPluginError(`${source.raw}: no plugin directory ${source.name} under ${settings.pluginsDir}`);
  if (!info.isDirectory())
    throw new PermanentPluginError(
      `${source.raw}: ${source.name} under ${settings.pluginsDir} is ${describeEntry(info)}; a local plugin must be a real folder (copy it there rather than link it)`,
    );
  const tree = await inspectTree(from, source.raw, settings.maxPluginBytes);
  // Copied first, then checked and hashed: the revision names exactly the bytes staged.
  await mkdir(settings.cacheDir, { recursive: true });
  const work = await mkdtemp(join(settings.cacheDir, '.copy-'));
  try {
    const copy = join(work, 'tree');
    const digest = await copyTree(from, copy, tree, source.raw);
    await validateManifest(copy, tree, source.name, source.raw);
    const path = join(settings.cacheDir, `local-${digest}`);
    if (!(await cachedEntry(path))) await publish(copy, path);
    return { pluginName: source.name, revision: `sha256:${digest}`, path };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
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

/** The tree must carry a plugin.yaml, within its cap, whose name is the declared name. */
async function validateManifest(root: string, tree: PluginTree, name: string, raw: string): Promise<void> {
  const size = tree.files.find((file) => file.path === MANIFEST_FILE)?.size ?? 0;
  if (size > MAX_MANIFEST_BYTES)
    throw new PermanentPluginError(
      `${raw}: ${MANIFEST_FILE} is ${size} bytes, past the cap of ${MAX_MANIFEST_BYTES} bytes for a manifest`,
    );
  const manifest = await readManifest(join(root, MANIFEST_FILE));
  if (manifest === null) throw new PermanentPluginError(`${raw}: no ${MANIFEST_FILE} at the plugin root`);
  assertSafePluginName(manifest.name, `${raw}: ${MANIFEST_FILE} name`);
  if (manifest.name !== name) {
    throw new PermanentPluginError(
      `${raw}: ${MANIFEST_FILE} names the plugin ${JSON.stringify(manifest.name)}, expected ${JSON.stringify(name)}`,
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
    if (!(await cachedEntry(to))) throw err;
  }
}

/**
 * Whether the cache holds the entry at `path`: a real folder. Anything else there (a link, a
 * file) is removed, never followed, and the revision is staged afresh.
 */
async function cachedEntry(path: string): Promise<boolean> {
  const info = await lstat(path).catch(() => null);
  if (info === null) return false;
  if (info.isDirectory()) return true;
  await rm(path, { force: true });
  return false;
}

function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
