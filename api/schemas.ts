/**
 * Schemas the routes share: the error body every non-2xx answer uses, path parameters, the
 * declared plugin set and a box's connection settings. The runtime's payload schemas are in
 * payload-schemas.ts.
 */
import { z } from 'zod';
import { SAFE_PLUGIN_NAME, WORK_FOLDER_SUFFIXES } from '../activities/plugins/errors.js';
import { safeText, workspaceIdSchema } from './payload-schemas.js';
import { sshBoxBodySchema } from '../activities/box/ssh-settings.js';

export const errorBody = z.object({
  error: z.string(),
  issues: z.array(z.object({ field: z.string(), problem: z.string() })).optional(),
  /** Present when a signal's fate is not known: it may have been delivered. Retrying is safe. */
  delivery: z.literal('unknown').optional(),
});

/** The error answers a route documents, each with the shared error body. */
export function errors<const C extends number>(...codes: C[]): Record<C, typeof errorBody> {
  return Object.fromEntries(codes.map((code) => [code, errorBody])) as Record<C, typeof errorBody>;
}

export const idParams = z.strictObject({ id: workspaceIdSchema });

export const declaredPluginsSchema = z
  .array(
    z.strictObject({
      name: z
        .string()
        .regex(SAFE_PLUGIN_NAME, "must be a safe path segment: letters, digits, '.', '_', '-'")
        .refine((name) => !name.includes('..'), "must not contain '..'")
        .refine(
          (name) => !WORK_FOLDER_SUFFIXES.some((suffix) => name.endsWith(suffix)),
          'must not end in .incoming or .removing (the names of a delivery or removal under way)',
        ),
      source: safeText(z.string().min(1).max(2048)),
    }),
  )
  .max(200)
  .refine((plugins) => new Set(plugins.map((p) => p.name)).size === plugins.length, 'plugin names must be unique');

/**
 * How the worker reaches a workspace's box: `local` (the worker's default driver) or `ssh`, whose
 * settings have one definition shared with the driver (activities/box/ssh-settings.ts).
 */
export const boxSettingsSchema = z.discriminatedUnion('driver', [
  z.strictObject({ driver: z.literal('local') }),
  sshBoxBodySchema,
]);
export type BoxSettingsBody = z.infer<typeof boxSettingsSchema>;
