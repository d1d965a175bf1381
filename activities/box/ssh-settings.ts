/**
 * The one definition of an SSH box's settings. The API validates `PUT /workspaces/:id/box` with
 * it under its snake_case names; the driver validates what it reads back from the database
 * (camelCase names) with the same rules, so whatever the API stores is what the driver runs,
 * and settings stored by hand that break a rule are refused by the driver with the same words.
 *
 * The host key is pinned: the SSH driver never accepts another one. `keyRef` names a private key
 * file in the worker's key directory (WL_SSH_KEY_DIR); no secret travels or is stored here.
 */
import { z } from 'zod';
import { UNSAFE_CHARACTERS } from '../../workflows/payloads.js';

const command = z
  .string()
  .max(1000)
  .refine((text) => text.trim() !== '', 'must be a command (not blank)')
  .refine(
    (text) => !UNSAFE_CHARACTERS.test(text.replace(/[\t\n]/g, ' ')),
    'must not contain control or format characters other than tab and newline, line separators or lone surrogates',
  );

/** `<type> <base64>`, as ssh-keyscan prints it or a `.pub` file holds it (a trailing comment is dropped). */
const HOST_KEY =
  /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|sk-ssh-ed25519@openssh\.com) ([A-Za-z0-9+/]+={0,3})(?: [ -~]{0,200})?$/;

/** Each field's rule, shared by both spellings of the settings. */
const rules = {
  host: z
    .string()
    .min(1)
    .max(253)
    .regex(/^[A-Za-z0-9][A-Za-z0-9.:-]*$/, 'must be a host name or an IP address'),
  port: z.number().int().min(1).max(65535),
  user: z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/, 'must be a user name'),
  keyRef: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'must be a file name in the worker key directory (no slashes)'),
  hostKey: z
    .string()
    .regex(
      HOST_KEY,
      "must be the box's public host key, '<type> <base64>' (ssh-keyscan or /etc/ssh/ssh_host_*_key.pub on the box)",
    ),
  root: z
    .string()
    .regex(/^\/[A-Za-z0-9._/-]*$/, "must be an absolute path (letters, digits, '.', '_', '-', '/')")
    .refine((path) => !path.split('/').includes('..'), "must not contain '..'")
    .refine((path) => path.replace(/\/+$/, '') !== '', 'must be a directory other than /'),
  restartCommand: command,
  runningCommand: command,
};

/** The settings as the database stores them and the driver uses them. */
export const sshBoxSettingsSchema = z.strictObject({
  host: rules.host,
  port: rules.port,
  user: rules.user,
  keyRef: rules.keyRef,
  hostKey: rules.hostKey,
  root: rules.root,
  restartCommand: rules.restartCommand,
  runningCommand: rules.runningCommand,
  stopCommand: command.optional(),
});

/**
 * An SSH box's settings. `hostKey` is `<type> <base64>`; `root` is the box's directory on the
 * host; `restartCommand` restarts the runtime and `runningCommand` exits 0 while it runs (both run
 * in `root` by the login shell's `/bin/sh`); `stopCommand` stops it for good when the workspace
 * is removed (without it a running box cannot be stopped).
 */
export type SshBoxSettings = z.output<typeof sshBoxSettingsSchema>;

/** The same settings under the API's names; the port defaults to 22. */
export const sshBoxBodySchema = z.strictObject({
  driver: z.literal('ssh'),
  host: rules.host,
  port: rules.port.default(22),
  user: rules.user,
  key_ref: rules.keyRef,
  host_key: rules.hostKey,
  root: rules.root,
  restart_command: rules.restartCommand,
  running_command: rules.runningCommand,
  stop_command: command.optional(),
});
export type SshBoxBody = z.output<typeof sshBoxBodySchema>;

/** A host key as it is pinned: its type and key, without the comment a `.pub` file may carry. */
function pinned(hostKey: string): string {
  return hostKey.split(' ', 2).join(' ');
}

/** The stored settings, validated: the settings, or a message naming each field that breaks its rule. */
export function parseSshBoxSettings(value: unknown): SshBoxSettings | string {
  const parsed = sshBoxSettingsSchema.safeParse(value);
  if (parsed.success) return { ...parsed.data, hostKey: pinned(parsed.data.hostKey) };
  return parsed.error.issues
    .map((issue) => (issue.path.length === 0 ? issue.message : `${issue.path.join('.')} ${issue.message}`))
    .join('; ');
}

/** The API's body → the stored names. */
export function sshSettingsFromBody(body: SshBoxBody): SshBoxSettings {
  return {
    host: body.host,
    port: body.port,
    user: body.user,
    keyRef: body.key_ref,
    hostKey: pinned(body.host_key),
    root: body.root,
    restartCommand: body.restart_command,
    runningCommand: body.running_command,
    ...(body.stop_command === undefined ? {} : { stopCommand: body.stop_command }),
  };
}

/** The stored names → the API's body. */
export function sshSettingsToBody(settings: SshBoxSettings): SshBoxBody {
  return {
    driver: 'ssh',
    host: settings.host,
    port: settings.port,
    user: settings.user,
    key_ref: settings.keyRef,
    host_key: settings.hostKey,
    root: settings.root,
    restart_command: settings.restartCommand,
    running_command: settings.runningCommand,
    ...(settings.stopCommand === undefined ? {} : { stop_command: settings.stopCommand }),
  };
}

/** Whether stored box settings name the SSH driver (anything else is the worker's default driver). */
export function isSshBox(stored: unknown): stored is { driver: 'ssh' } {
  return typeof stored === 'object' && stored !== null && (stored as { driver?: unknown }).driver === 'ssh';
}

/**
 * Stored box settings (`{ driver: 'ssh', ...settings }`; null for the default driver): the SSH
 * settings, a message naming each field that breaks its rule, or null when the box is not
 * reached over SSH.
 */
export function storedSshSettings(stored: unknown): SshBoxSettings | string | null {
  if (!isSshBox(stored)) return null;
  return parseSshBoxSettings(Object.fromEntries(Object.entries(stored).filter(([key]) => key !== 'driver')));
}
