/**
 * Plugin source strings parsed into where to fetch from:
 *   gitea://owner/repo[/subpath…]#ref     github://owner/repo#ref
 *   git+https://host/path/repo.git#ref    git+file:///path/repo.git#ref
 *   local://name  (or a bare name)        from the configured plugins directory
 * A ref may be a branch, a tag, a commit sha, or carry the reference's `tag:`/`sha:` prefix.
 *
 * A source's URL is parsed once, by the URL guard's rules (url-guard.ts): what another parser
 * could read differently (a backslash, user-info, a control character, a malformed
 * percent-escape) is refused, and the URL kept is the parsed one re-serialised. Where it may
 * lead is checked twice: here, from the text alone (the host list, the file roots), and by
 * `checkGitRemote` just before git runs, against what the network and the file system say then
 * (the host's addresses, the directory's real path). The API runs both at declaration time.
 */
import { realpath } from 'node:fs/promises';
import { resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkUrl, lexicalProblem, type ResolveHost, type UrlPolicy } from '../../url-guard.js';
import { PermanentPluginError, ResolverUnavailableError, assertSafePluginName } from './errors.js';

export interface SourceSettings {
  giteaBaseUrl: string;
  githubBaseUrl: string;
  /** Git sources without `#ref` are rejected unless this is set. */
  allowUnpinned: boolean;
  /**
   * The hosts `git+http(s)://` sources may name (`host` or `host:port`); null: any host. The
   * gitea:// and github:// base URLs are the operator's own and always allowed.
   */
  sourceHosts: string[] | null;
  /** Absolute directories `git+file://` sources may lie under; none: `git+file://` is refused. */
  fileRoots: string[];
  /** The address rules git+http(s) hosts obey: the same as runtime URLs'. */
  urlPolicy: UrlPolicy;
}

export type PluginSource =
  | {
      kind: 'git';
      raw: string;
      /** Normalised: re-serialised from its parsed form. */
      url: string;
      ref: string | null;
      subpath: string | null;
      name: string;
      /**
       * `base-url`: under the operator's gitea:// or github:// base URL, trusted as configured.
       * `declared`: the declaration names the location; checkGitRemote checks it before git runs.
       */
      origin: 'base-url' | 'declared';
    }
  | { kind: 'local'; raw: string; name: string };

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const REF = /^[A-Za-z0-9][A-Za-z0-9._/-]*$/;

export function parsePluginSource(raw: string, settings: SourceSettings): PluginSource {
  const source = raw.trim();
  if (source === '') throw new PermanentPluginError('plugin source is empty');
  if (/[\p{Cc}\p{Cs}\s]/u.test(source))
    throw new PermanentPluginError(
      `plugin source ${JSON.stringify(raw)} contains control characters, whitespace or lone surrogates`,
    );
  if (/%(?![0-9A-Fa-f]{2})/.test(source))
    throw new PermanentPluginError(
      `plugin source ${raw}: malformed percent-escape (% must be followed by two hex digits)`,
    );
  const [spec = '', ...fragments] = source.split('#');
  if (fragments.length > 1) throw new PermanentPluginError(`plugin source ${raw}: more than one '#'`);
  const ref = fragments.length === 1 ? parseRef(raw, fragments[0] ?? '') : null;

  const scheme = /^([a-z+]+):\/\//.exec(spec)?.[1];
  if (scheme === undefined) return local(raw, spec);
  const rest = spec.slice(scheme.length + 3);
  switch (scheme) {
    case 'local':
      return local(raw, rest);
    case 'gitea':
    case 'github': {
      const segments = rest.split('/');
      segments.forEach((segment) => {
        if (!SEGMENT.test(segment) || segment === '..')
          throw new PermanentPluginError(
            `plugin source ${raw}: path segment ${JSON.stringify(segment)} is not allowed`,
          );
      });
      const [owner, repo, ...subpath] = segments;
      if (owner === undefined || repo === undefined)
        throw new PermanentPluginError(`plugin source ${raw}: expected ${scheme}://<owner>/<repo>`);
      if (scheme === 'github' && subpath.length > 0)
        throw new PermanentPluginError(`plugin source ${raw}: github sources take no subpath`);
      const base = scheme === 'gitea' ? settings.giteaBaseUrl : settings.githubBaseUrl;
      if (base === '')
        throw new PermanentPluginError(`plugin source ${raw}: no base URL configured for ${scheme}:// sources`);
      const name = subpath.at(-1) ?? repo;
      // The operator's base URL, re-serialised; the segments appended are plain names.
      const url = new URL(`${base.replace(/\/+$/, '')}/${owner}/${repo}.git`).href;
      return git(raw, url, ref, subpath.join('/') || null, name, 'base-url', settings);
    }
    case 'git+https':
    case 'git+http':
    case 'git+file': {
      const url = allowedLocation(raw, spec.slice('git+'.length), settings);
      const last = new URL(url).pathname.split('/').filter(Boolean).at(-1) ?? '';
      return git(raw, url, ref, null, percentDecoded(raw, last).replace(/\.git$/, ''), 'declared', settings);
    }
    default:
      throw new PermanentPluginError(
        `plugin source ${raw}: unknown scheme ${scheme}:// (use gitea://, github://, git+https://, git+file:// or local://)`,
      );
  }
}

function parseRef(raw: string, fragment: string): string {
  const ref = fragment.replace(/^(tag|sha):/, '');
  if (!REF.test(ref) || ref.includes('..'))
    throw new PermanentPluginError(`plugin source ${raw}: ref ${JSON.stringify(fragment)} is not valid`);
  return ref;
}

/**
 * The worker fetches whatever a source names, so a source may only name what the operator
 * allowed: a listed host for git+http(s), a path under a listed directory for git+file (none by
 * default: the worker's own files are not plugins). Returns the URL re-serialised.
 */
function allowedLocation(raw: string, text: string, settings: SourceSettings): string {
  const lexical = lexicalProblem(text);
  if (lexical !== null) throw new PermanentPluginError(`plugin source ${raw}: the URL ${lexical}`);
  let parsed: URL;
  try {
    parsed = new URL(text);
  } catch {
    throw new PermanentPluginError(`plugin source ${raw}: ${text} is not a valid URL`);
  }
  if (parsed.protocol === 'file:') {
    if (settings.fileRoots.length === 0)
      throw new PermanentPluginError(
        `plugin source ${raw}: git+file:// sources are off; set WL_PLUGIN_SOURCE_FILE_ROOTS to the directories they may read`,
      );
    if (parsed.host !== '')
      throw new PermanentPluginError(`plugin source ${raw}: a git+file:// source names no host (git+file:///path)`);
    assertUnderFileRoot(raw, filePath(raw, parsed), settings.fileRoots);
    return parsed.href;
  }
  const hosts = settings.sourceHosts;
  if (hosts === null) return parsed.href;
  const host = parsed.host.toLowerCase();
  if (!hosts.includes(host) && !hosts.includes(parsed.hostname.toLowerCase()))
    throw new PermanentPluginError(
      `plugin source ${raw}: host ${host} is not one git sources may name (WL_PLUGIN_SOURCE_HOSTS)`,
    );
  return parsed.href;
}

/** Percent-escapes decoded; escapes that are not UTF-8 are a permanent error. */
function percentDecoded(raw: string, text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new PermanentPluginError(`plugin source ${raw}: its percent-escapes do not spell UTF-8 text`);
  }
}

/** The local path a file: URL names (percent-escapes decoded, `..` resolved). */
function filePath(raw: string, url: URL): string {
  try {
    return resolve(fileURLToPath(url));
  } catch (err) {
    // e.g. an escaped '/' (%2F), which a path cannot hold
    throw new PermanentPluginError(`plugin source ${raw}: ${url.href} is not a local path: ${(err as Error).message}`);
  }
}

function assertUnderFileRoot(raw: string, path: string, roots: string[]): void {
  if (!roots.some((root) => isUnder(path, root)))
    throw new PermanentPluginError(
      `plugin source ${raw}: ${path} is outside the directories git+file:// sources may read (WL_PLUGIN_SOURCE_FILE_ROOTS)`,
    );
}

function isUnder(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

/** What git is handed for a source, after the checks that need the network or the disk. */
export interface GitRemote {
  /** A URL for http(s) and the operator's file: base URLs; a real local path for git+file sources. */
  url: string;
  /** The protocol git may use for it (git's name: https, http or file). */
  protocol: 'https' | 'http' | 'file';
  /** The address the guard checked for the URL's host, for git to dial instead of resolving it again. */
  pin: { host: string; port: number; addresses: string[] } | null;
}

/**
 * Checks where a git source leads now, just before git runs, and returns what git is handed:
 * a declared http(s) host must pass the URL guard (its addresses resolved and checked, allow-list
 * or not), and git is pinned to the addresses it checked; a declared git+file path must lie under
 * a file root after links are resolved, and git is handed that real path. The operator's base
 * URLs are taken as configured. Permanent problems throw PermanentPluginError; a resolver that
 * cannot answer now throws ResolverUnavailableError (retryable).
 */
export async function checkGitRemote(
  source: Extract<PluginSource, { kind: 'git' }>,
  settings: SourceSettings,
  resolveHost?: ResolveHost,
): Promise<GitRemote> {
  const url = new URL(source.url);
  const protocol = url.protocol.slice(0, -1);
  if (protocol !== 'https' && protocol !== 'http' && protocol !== 'file')
    throw new PermanentPluginError(`${source.raw}: git sources use https, http or file URLs, not ${url.protocol}`);
  if (source.origin === 'base-url') return { url: source.url, protocol, pin: null };
  if (protocol === 'file') return { url: await realFilePath(source, url, settings), protocol, pin: null };
  const verdict = await checkUrl(source.url, settings.urlPolicy, resolveHost ? { resolveHost } : {});
  if (!verdict.ok) {
    const message = `plugin source ${source.raw}: the git host ${verdict.reason}`;
    if (verdict.transient) throw new ResolverUnavailableError(message);
    throw new PermanentPluginError(message);
  }
  const checked = verdict.url;
  return {
    url: checked.href,
    protocol,
    pin: checked.literal ? null : { host: checked.hostname, port: checked.port, addresses: checked.addresses },
  };
}

/** The real path (links resolved) of a git+file source, which must lie under a file root's real path. */
async function realFilePath(
  source: Extract<PluginSource, { kind: 'git' }>,
  url: URL,
  settings: SourceSettings,
): Promise<string> {
  const path = filePath(source.raw, url);
  let real: string;
  try {
    real = await realpath(path);
  } catch {
    throw new PermanentPluginError(`${source.raw}: ${path} does not exist`);
  }
  const roots = await Promise.all(settings.fileRoots.map((root) => realpath(root).catch(() => null)));
  assertUnderFileRoot(
    source.raw,
    real,
    roots.filter((root): root is string => root !== null),
  );
  return real;
}

function local(raw: string, name: string): PluginSource {
  assertSafePluginName(name, `plugin source ${raw}: local plugin`);
  return { kind: 'local', raw, name };
}

function git(
  raw: string,
  url: string,
  ref: string | null,
  subpath: string | null,
  name: string,
  origin: 'base-url' | 'declared',
  settings: SourceSettings,
): PluginSource {
  assertSafePluginName(name, `plugin source ${raw}: plugin`);
  if (ref === null && !settings.allowUnpinned) {
    throw new PermanentPluginError(
      `plugin source ${raw} is unpinned: add #<branch|tag|sha>, or allow unpinned sources`,
    );
  }
  return { kind: 'git', raw, url, ref, subpath, name, origin };
}
