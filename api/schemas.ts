/**
 * Schemas the routes share: the error body every non-2xx answer uses, path parameters, the
 * declared plugin set and a box's connection settings. The runtime's payload schemas are in
 * payload-schemas.ts.
 */
import { z } from 'zod';
import { SAFE_PLUGIN_NAME, WORK_FOLDER_SUFFIXES } from '../activities/plugins/errors.js';
import { UNSAFE_CHARACTERS } from '../workflows/payloads.js';
import { safeText, workspaceIdSchema } from './payload-schemas.js';
import type { SshBoxSettings } from '../activities/box/ssh.js';

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
 * How the worker reaches a workspace's box: `local` (the worker's default driver) or `ssh`. The
 * host key is pinned: the SSH driver never accepts another one. `key_ref` names a private key
 * file in the worker's key directory (WL_SSH_KEY_DIR); no secret travels or is stored here.
 */
const command = z
  .string()
  .max(1000)
  .refine((text) => text.trim() !== '', 'must be a command (not blank)')
  .refine(
    (text) => !UNSAFE_CHARACTERS.test(text.replace(/[\t\n]/g, ' ')),
    'must not contain control or format characters other than tab and newline, line separators or lone surrogates',
  );

export const boxSettingsSchema = z.discriminatedUnion('driver', [
  z.strictObject({ driver: z.literal('local') }),
  z.strictObject({
    driver: z.literal('ssh'),
    host: z
      .string()
      .min(1)
      .max(253)
      .regex(/^[A-Za-z0-9][A-Za-z0-9.:-]*$/, 'must be a host name or an IP address'),
    port: z.number().int().min(1).max(65535).default(22),
    user: z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/, 'must be a user name'),
    key_ref: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'must be a file name in the worker key directory (no slashes)'),
    host_key: z
      .string()
      .regex(
        /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/]+={0,3}$/,
        "must be the box's public host key, '<type> <base64>' (ssh-keyscan or /etc/ssh/ssh_host_*_key.pub on the box)",
      ),
    root: z
      .string()
      .regex(/^\/[A-Za-z0-9._/-]*$/, "must be an absolute path (letters, digits, '.', '_', '-', '/')")
      .refine((path) => !path.split('/').includes('..'), "must not contain '..'")
      .refine((path) => path.replace(/\/+$/, '') !== '', 'must be a directory other than /'),
    restart_command: command,
    running_command: command,
    stop_command: command.optional(),
  }),
]);
export type BoxSettingsBody = z.infer<typeof boxSettingsSchema>;
export type SshBoxSettingsBody = Extract<BoxSettingsBody, { driver: 'ssh' }>;

/** An SSH box's settings as the driver and the database name them (the API's names are snake_case). */
export function sshSettingsFromBody(body: SshBoxSettingsBody): SshBoxSettings {
  return {
    host: body.host,
    port: body.port,
    user: body.user,
    keyRef: body.key_ref,
    hostKey: body.host_key,
    root: body.root,
    restartCommand: body.restart_command,
    runningCommand: body.running_command,
    ...(body.stop_command === undefined ? {} : { stopCommand: body.stop_command }),
  };
}
