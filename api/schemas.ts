/**
 * Schemas the routes share: the error body every non-2xx answer uses, path parameters and the
 * declared plugin set. The runtime's payload schemas are in payload-schemas.ts.
 */
import { z } from 'zod';
import { SAFE_PLUGIN_NAME } from '../activities/plugins/errors.js';
import { workspaceIdSchema } from './payload-schemas.js';

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
        .refine((name) => !name.includes('..'), "must not contain '..'"),
      source: z.string().min(1).max(2048),
    }),
  )
  .max(200)
  .refine((plugins) => new Set(plugins.map((p) => p.name)).size === plugins.length, 'plugin names must be unique');
