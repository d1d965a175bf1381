import { PermanentPluginError } from '../activities/plugins/errors.js';
import { parsePluginSource, type SourceSettings } from '../activities/plugins/source.js';
import type { Issue } from './errors.js';

/**
 * What the reconcile would reject permanently later, found at declaration time: one issue per
 * bad source, its field named `<field>.<index>.source`.
 */
export function validatePluginSources(
  plugins: { name: string; source: string }[],
  settings: SourceSettings,
  field: string,
): Issue[] {
  return plugins.flatMap((plugin, index) => {
    try {
      const parsed = parsePluginSource(plugin.source, settings);
      if (parsed.name === plugin.name) return [];
      return [
        {
          field: `${field}.${index}.source`,
          problem: `names the plugin ${parsed.name}, not ${plugin.name}`,
        },
      ];
    } catch (err) {
      if (err instanceof PermanentPluginError) return [{ field: `${field}.${index}.source`, problem: err.message }];
      throw err;
    }
  });
}
