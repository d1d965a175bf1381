import { PermanentPluginError } from '../activities/plugins/errors.js';
import { checkGitRemote, parsePluginSource, type SourceSettings } from '../activities/plugins/source.js';
import type { Issue } from './errors.js';

/**
 * What the reconcile would reject permanently later, found at declaration time: one issue per
 * bad source, its field named `<field>.<index>.source`. A declared git host passes the URL
 * guard here as it will in the worker (resolved, every address checked); the worker checks
 * again before it fetches, since DNS and links may change meanwhile. Throws
 * ResolverUnavailableError when a host could not be resolved now.
 */
export async function validatePluginSources(
  plugins: { name: string; source: string }[],
  settings: SourceSettings,
  field: string,
): Promise<Issue[]> {
  const issues = await Promise.all(
    plugins.map(async (plugin, index): Promise<Issue[]> => {
      const issue = (problem: string): Issue[] => [{ field: `${field}.${index}.source`, problem }];
      try {
        const parsed = parsePluginSource(plugin.source, settings);
        if (parsed.name !== plugin.name) return issue(`names the plugin ${parsed.name}, not ${plugin.name}`);
        // git+file paths are checked on the worker's disk, where they are read.
        if (parsed.kind === 'git' && parsed.origin === 'declared' && !parsed.url.startsWith('file:'))
          await checkGitRemote(parsed, settings);
        return [];
      } catch (err) {
        if (err instanceof PermanentPluginError) return issue(err.message);
        throw err;
      }
    }),
  );
  return issues.flat();
}
