import { z } from 'zod';
import { PermanentPluginError, SAFE_PLUGIN_NAME } from '../activities/plugins/errors.js';
import { parsePluginSource, type SourceSettings } from '../activities/plugins/source.js';
import type { Issue } from './errors.js';

export const declaredPluginsSchema = z
  .array(
    z.strictObject({
      name: z
        .string()
        .regex(SAFE_PLUGIN_NAME, "must be a safe path segment: letters, digits, '.', '_', '-'")
        .refine((name) => !name.includes('..'), "must not contain '..'"),
      source: z.string().min(1).max(2048),
    }),
  )
  .max(200)
  .refine((plugins) => new Set(plugins.map((p) => p.name)).size === plugins.length, 'plugin names must be unique');

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
