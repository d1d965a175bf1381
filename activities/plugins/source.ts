/**
 * Plugin source strings parsed into where to fetch from:
 *   gitea://owner/repo[/subpath…]#ref     github://owner/repo#ref
 *   git+https://host/path/repo.git#ref    git+file:///path/repo.git#ref
 *   local://name  (or a bare name)        from the configured plugins directory
 * A ref may be a branch, a tag, a commit sha, or carry the reference's `tag:`/`sha:` prefix.
 */
import { PermanentPluginError, assertSafePluginName } from './errors.js';

export interface SourceSettings {
  giteaBaseUrl: string;
  githubBaseUrl: string;
  /** Git sources without `#ref` are rejected unless this is set. */
  allowUnpinned: boolean;
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
