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
 *
 * Git is handed only what checkGitRemote checked (source.ts) and cannot reach further: it runs
 * with no system, global or repository configuration of ours, no credential helper, only the
 * one protocol the source needs, no redirects, the checked address pinned for the host, and an
 * environment of a few variables. While it fetches and checks out, its work folder is watched
 * and git is stopped once the folder outgrows the plugin size cap (FETCH_SIZE_FACTOR times it).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, utimes } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { ResolveHost } from '../../url-guard.js';
import { PermanentPluginError, assertSafePluginName } from './errors.js';
import { checkGitRemote, type GitRemote, type PluginSource, type SourceSettings } from './source.js';
import { copyTree, describeEntry, inspectTree, type PluginTree } from './tree.js';

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

/** `resolveHost`: how git hosts are resolved for the URL guard (the system resolver by default). */
export async function stagePlugin(
  source: PluginSource,
  settings: SourceSettings & StageSettings,
  options: { resolveHost?: ResolveHost } = {},
): Promise<StagedPlugin> {
  // The sweep first: what it deletes is older than its age limit, and this stage makes its own
  // revision fresh again below, so a revision is never deleted between its stage and delivery.
  if (Date.now() - lastSweep >= SWEEP_EVERY_MS) {
    lastSweep = Date.now();
    await pruneCache(settings);
  }
  const staged =
    source.kind === 'git' ? await stageGit(source, settings, options.resolveHost) : await stageLocal(source, settings);
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
  settings: SourceSettings & StageSettings,
  resolveHost: ResolveHost | undefined,
): Promise<StagedPlugin> {
  // A pinned sha already staged needs no network: where the source leads is checked only when
  // git is to reach it.
  const pinned = source.ref !== null && /^[0-9a-f]{40}$/.test(source.ref) ? source.ref : null;
  const cached = (commit: string): string =>
    join(settings.cacheDir, `git-${commit}${source.subpath ? `-${hash(source.subpath).slice(0, 12)}` : ''}`);
  if (pinned !== null && (await cachedEntry(cached(pinned))))
    return { pluginName: source.name, revision: pinned, path: cached(pinned) };
  await mkdir(settings.cacheDir, { recursive: true });
  const remote = await checkGitRemote(source, settings, resolveHost);
  const commit = pinned ?? (await resolveCommit(source, remote, settings));
  const path = cached(commit);
  if (await cachedEntry(path)) return { pluginName: source.name, revision: commit, path };

  const work = await mkdtemp(join(settings.cacheDir, '.fetch-'));
  try {
    const checkout = join(work, 'repo');
    const watch = { dir: work, limit: FETCH_SIZE_FACTOR * settings.maxPluginBytes, cap: settings.maxPluginBytes };
    await git(['init', '-q', checkout], settings);
    await git(['-C', checkout, 'fetch', '-q', '--depth=1', remote.url, commit], settings, { source, remote, watch });
    await git(['-C', checkout, 'checkout', '-q', 'FETCH_HEAD'], settings, { source, watch });
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

/** Branch or tag (peeled) → commit sha. A ref the remote lacks is permanent. */
async function resolveCommit(
  source: Extract<PluginSource, { kind: 'git' }>,
  remote: GitRemote,
  settings: StageSettings,
): Promise<string> {
  const ref = source.ref ?? 'HEAD';
  const { stdout } = await git(
    ['ls-remote', remote.url, ref, `refs/heads/${ref}`, `refs/tags/${ref}`, `refs/tags/${ref}^{}`],
    settings,
    { source, remote },
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

/**
 * How far a fetch's work folder (the fetched objects and the checkout) may grow, as a multiple
 * of the plugin size cap: a plugin within the cap takes about twice it there (its compressed
 * objects and its files), and a sub-path's repository may hold a little more besides.
 */
export const FETCH_SIZE_FACTOR = 3;
/** How often a running fetch's work folder is measured. */
const WATCH_EVERY_MS = 100;
/** The most of git's output kept: ls-remote's answer, or the end of an error. */
const MAX_GIT_STDOUT = 16 * 1024 * 1024;
const MAX_GIT_STDERR = 64 * 1024;
/** The only variables of the worker's environment git sees: no secrets, no GIT_* of ours. */
const GIT_ENV_PASSED = [
  'PATH',
  'HOME',
  'LANG',
  'LC_ALL',
  'TZ',
  'TMPDIR',
  // The operator's egress: a proxy dials on git's behalf and must apply the same address rules.
  'http_proxy',
  'https_proxy',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'no_proxy',
  'NO_PROXY',
  'all_proxy',
  'ALL_PROXY',
  'SSL_CERT_FILE',
  'SSL_CERT_DIR',
  'GIT_SSL_CAINFO',
  'GIT_SSL_CAPATH',
];

interface GitCall {
  /** Named in errors. */
  source?: PluginSource;
  /** The checked remote the call reaches: its protocol is the only one allowed, its address pinned. */
  remote?: GitRemote;
  /** Stop git once `dir` holds more than `limit` bytes. */
  watch?: { dir: string; limit: number; cap: number };
}

/** The `-c` options every git call runs with: nothing git may reach or run beyond the remote given. */
function gitConfig(remote: GitRemote | undefined): string[] {
  const options = [
    'protocol.allow=never',
    'http.followRedirects=false',
    'credential.helper=',
    'core.askPass=',
    'core.hooksPath=/dev/null',
    // Keep what a fetch receives as one pack written as it arrives (never loose objects held in
    // memory until complete), so the work folder's size follows the download.
    'fetch.unpackLimit=1',
  ];
  if (remote !== undefined) options.push(`protocol.${remote.protocol}.allow=always`);
  if (remote?.pin) {
    const { host, port, addresses } = remote.pin;
    const listed = addresses.map((address) => (address.includes(':') ? `[${address}]` : address)).join(',');
    options.push(`http.curloptResolve=${host}:${port}:${listed}`);
  }
  return options.flatMap((option) => ['-c', option]);
}

function gitEnv(cacheDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const name of GIT_ENV_PASSED) if (process.env[name] !== undefined) env[name] = process.env[name];
  return {
    ...env,
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_TERMINAL_PROMPT: '0',
    GIT_PROTOCOL_FROM_USER: '0',
    // ls-remote runs in the cache folder: no repository above it lends git its configuration.
    GIT_CEILING_DIRECTORIES: dirname(cacheDir),
  };
}

async function git(args: string[], settings: StageSettings, call: GitCall = {}): Promise<{ stdout: string }> {
  const step = args[0] === '-C' ? (args[2] ?? '') : (args[0] ?? '');
  const failure = (detail: string): string =>
    `git ${step} failed${call.source ? ` for ${call.source.raw}` : ''}: ${detail}`;
  const result = await runGit([...gitConfig(call.remote), ...args], settings, call.watch);
  if (result.outgrew !== null && call.watch) {
    throw new PermanentPluginError(
      `${call.source?.raw ?? 'plugin source'}: git ${step} stopped: its work folder passed ${call.watch.limit} bytes ` +
        `(${FETCH_SIZE_FACTOR} times the plugin size cap of ${call.watch.cap} bytes, WL_PLUGIN_MAX_BYTES); ` +
        `a plugin, or the repository holding its sub-path, must fit the cap`,
    );
  }
  if (result.error === null) return { stdout: result.stdout };
  if (result.overflowed) throw new PermanentPluginError(failure(result.error));
  const stderr = result.stderr.trim();
  const message = failure(stderr || result.error);
  // Redirects are not followed: the source must name where the repository is.
  if (/returned error: 30[12378]/.test(stderr))
    throw new PermanentPluginError(`${message} (redirects are not followed: declare the URL the server redirects to)`);
  // A repository that does not exist will not appear by retrying; network trouble may pass.
  if (
    /does not appear to be a git repository|repository .* not found|not found|transport '.*' not allowed/i.test(stderr)
  )
    throw new PermanentPluginError(message);
  throw new Error(message);
}

interface GitRun {
  stdout: string;
  stderr: string;
  /** Why git failed (exit status, signal, timeout, output too large), or null. */
  error: string | null;
  /** The work folder's size when it passed the watch limit, or null. */
  outgrew: number | null;
  /** Git printed more than MAX_GIT_STDOUT (a remote advertising that much is not a plugin's). */
  overflowed: boolean;
}

/** Runs git with bounded output and time; with a watch, kills it once the folder outgrows the limit. */
function runGit(args: string[], settings: StageSettings, watch?: { dir: string; limit: number }): Promise<GitRun> {
  return new Promise((resolve) => {
    // Its own process group, so that stopping it stops the helpers it runs too (git-remote-http,
    // index-pack), which would otherwise go on writing until they noticed.
    const child = spawn('git', args, {
      cwd: settings.cacheDir,
      env: gitEnv(settings.cacheDir),
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const stdout: Buffer[] = [];
    let stdoutBytes = 0;
    let stderr = '';
    let error: string | null = null;
    let outgrew: number | null = null;
    let overflowed = false;
    const stop = (why: string): void => {
      error ??= why;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    child.stdout.on('data', (chunk: Buffer) => {
      stdoutBytes += chunk.length;
      if (stdoutBytes > MAX_GIT_STDOUT) {
        overflowed = true;
        return stop(`its output passed ${MAX_GIT_STDOUT} bytes`);
      }
      stdout.push(chunk);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString('utf8')).slice(-MAX_GIT_STDERR);
    });
    const timer = setTimeout(() => stop(`timed out after ${settings.fetchTimeoutMs} ms`), settings.fetchTimeoutMs);
    let measuring = false;
    const measure = async (): Promise<void> => {
      if (watch === undefined || measuring) return;
      measuring = true;
      const size = await folderSize(watch.dir);
      measuring = false;
      if (size > watch.limit) {
        outgrew ??= size;
        stop(`its work folder passed ${watch.limit} bytes`);
      }
    };
    const poll = watch === undefined ? undefined : setInterval(() => void measure(), WATCH_EVERY_MS);
    child.on('error', (err) => stop(err.message));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearInterval(poll);
      if (error === null && code !== 0) error = signal === null ? `exit status ${code}` : `killed by ${signal}`;
      // A step that finished between two measurements is measured once more: the limit holds however fast git was.
      void (watch === undefined || outgrew !== null ? Promise.resolve(0) : folderSize(watch.dir)).then((size) => {
        if (watch !== undefined && outgrew === null && size > watch.limit) outgrew = size;
        resolve({ stdout: Buffer.concat(stdout).toString('utf8'), stderr, error, outgrew, overflowed });
      });
    });
  });
}

/** Bytes in the regular files under `dir`, links not followed; what vanishes meanwhile counts nothing. */
async function folderSize(dir: string): Promise<number> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  let total = 0;
  for (const entry of entries) {
    if (!entry.isFile()) continue;
    total += await lstat(join(entry.parentPath, entry.name)).then(
      (info) => info.size,
      () => 0,
    );
  }
  return total;
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
