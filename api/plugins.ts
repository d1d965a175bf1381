import { z } from 'zod';
import { PermanentPluginError, SAFE_PLUGIN_NAME } from '../activities/plugins/errors.js';
import { parsePluginSource, type SourceSettings } from '../activities/plugins/source.js';

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

/** Rejects at declaration time what the reconcile would reject permanently later. */
export function validatePluginSources(
  plugins: { name: string; source: string }[],
  settings: SourceSettings,
  toError: (message: string) => Error,
): void {
  for (const plugin of plugins) {
    try {
      const parsed = parsePluginSource(plugin.source, settings);
      if (parsed.name !== plugin.name) {
        throw new PermanentPluginError(
          `plugin ${plugin.name}: source ${plugin.source} names the plugin ${parsed.name}`,
        );
      }
    } catch (err) {
      if (err instanceof PermanentPluginError) throw toError(`body.plugins: ${err.message}`);
      throw err;
    }
  }
}
