/**
 * Plugin source strings parsed into where to fetch from:
 *   gitea://owner/repo[/subpath…]#ref     github://owner/repo#ref
 *   git+https://host/path/repo.git#ref    git+file:///path/repo.git#ref
 *   local://name  (or a bare name)        from the configured plugins directory
 * A ref may be a branch, a tag, a commit sha, or carry the reference's `tag:`/`sha:` prefix.
 */
import { resolve, sep } from 'node:path';
import { PermanentPluginError, assertSafePluginName } from './errors.js';

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
}

export type PluginSource =
  | { kind: 'git'; raw: string; url: string; ref: string | null; subpath: string | null; name: string }
  | { kind: 'local'; raw: string; name: string };

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const REF = /^[A-Za-z0-9][A-Za-z0-9._/-]*$/;

export function parsePluginSource(raw: string, settings: SourceSettings): PluginSource {
  const source = raw.trim();
  if (source === '') throw new PermanentPluginError('plugin source is empty');
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
      return git(
        raw,
        `${base.replace(/\/+$/, '')}/${owner}/${repo}.git`,
        ref,
        subpath.join('/') || null,
        name,
        settings,
      );
    }
    case 'git+https':
    case 'git+http':
    case 'git+file': {
      const url = spec.slice('git+'.length);
      assertAllowedLocation(raw, url, settings);
      const name = (url.split('/').filter(Boolean).at(-1) ?? '').replace(/\.git$/, '');
      return git(raw, url, ref, null, name, settings);
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
 * default: the worker's own files are not plugins).
 */
function assertAllowedLocation(raw: string, url: string, settings: SourceSettings): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new PermanentPluginError(`plugin source ${raw}: ${url} is not a valid URL`);
  }
  if (parsed.protocol === 'file:') {
    if (settings.fileRoots.length === 0)
      throw new PermanentPluginError(
        `plugin source ${raw}: git+file:// sources are off; set WL_PLUGIN_SOURCE_FILE_ROOTS to the directories they may read`,
      );
    const path = resolve(decodeURIComponent(parsed.pathname));
    if (!settings.fileRoots.some((root) => path === root || path.startsWith(root.endsWith(sep) ? root : root + sep)))
      throw new PermanentPluginError(
        `plugin source ${raw}: ${path} is outside the directories git+file:// sources may read (WL_PLUGIN_SOURCE_FILE_ROOTS)`,
      );
    return;
  }
  const hosts = settings.sourceHosts;
  if (hosts === null) return;
  const host = parsed.host.toLowerCase();
  if (!hosts.includes(host) && !hosts.includes(parsed.hostname.toLowerCase()))
    throw new PermanentPluginError(
      `plugin source ${raw}: host ${host} is not one git sources may name (WL_PLUGIN_SOURCE_HOSTS)`,
    );
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
  settings: SourceSettings,
): PluginSource {
  assertSafePluginName(name, `plugin source ${raw}: plugin`);
  if (ref === null && !settings.allowUnpinned) {
    throw new PermanentPluginError(
      `plugin source ${raw} is unpinned: add #<branch|tag|sha>, or allow unpinned sources`,
    );
  }
  return { kind: 'git', raw, url, ref, subpath, name };
}
