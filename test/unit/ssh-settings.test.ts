/**
 * One definition of an SSH box's settings: the API's body schema (PUT /workspaces/:id/box) and
 * the driver's check of what it reads from the database give the same verdict on every input,
 * good or hostile, and the two spellings map onto each other without loss.
 */
import { describe, expect, it } from 'vitest';
import {
  parseSshBoxSettings,
  sshSettingsFromBody,
  sshSettingsToBody,
  storedSshSettings,
  type SshBoxSettings,
} from '../../activities/box/ssh-settings.js';
import { boxSettingsSchema } from '../../api/schemas.js';

const HOST_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHcUu9gOeOeNK4Jc8Q6kG0xB9Z9nC9ZkcdYPh6lqfA8x';

const valid: SshBoxSettings = {
  host: 'box-1.internal',
  port: 22,
  user: 'agent',
  keyRef: 'fleet-key',
  hostKey: HOST_KEY,
  root: '/home/agent/box',
  restartCommand: 'systemctl restart agent',
  runningCommand: 'systemctl is-active --quiet agent',
};

/** The API's names for the stored ones. */
const BODY_NAME: Record<string, string> = {
  keyRef: 'key_ref',
  hostKey: 'host_key',
  restartCommand: 'restart_command',
  runningCommand: 'running_command',
  stopCommand: 'stop_command',
};

function asBody(stored: Record<string, unknown>): Record<string, unknown> {
  return {
    driver: 'ssh',
    ...Object.fromEntries(Object.entries(stored).map(([key, value]) => [BODY_NAME[key] ?? key, value])),
  };
}

/** Each row changes one field of `valid` (undefined: the field is left out); the expected verdict and the words of a refusal. */
const rows: [Record<string, unknown>, RegExp | 'ok'][] = [
  [{}, 'ok'],
  [{ stopCommand: 'systemctl stop agent' }, 'ok'],
  [{ host: '10.0.0.5' }, 'ok'],
  [{ host: 'fd00::1' }, 'ok'],
  [{ port: 2222 }, 'ok'],
  [{ hostKey: `${HOST_KEY} root@box-1` }, 'ok'],
  [{ hostKey: 'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY=' }, 'ok'],
  [{ restartCommand: 'cd /srv &&\n\tsystemctl restart agent' }, 'ok'],
  [{ host: '' }, /host/],
  [{ host: '-oProxyCommand=touch /tmp/x' }, /host name or an IP address/],
  [{ host: 'box 1' }, /host name or an IP address/],
  [{ host: 'a'.repeat(254) }, /host/],
  [{ port: 0 }, /port/],
  [{ port: 65536 }, /port/],
  [{ port: '22' }, /port/],
  [{ port: 22.5 }, /port/],
  [{ user: 'a b' }, /user name/],
  [{ user: '-l' }, /user name/],
  [{ user: 'a'.repeat(33) }, /user name/],
  [{ keyRef: '../id_ed25519' }, /no slashes/],
  [{ keyRef: 'keys/id' }, /no slashes/],
  [{ keyRef: '.ssh' }, /no slashes/],
  [{ keyRef: '-i' }, /no slashes/],
  [{ hostKey: 'AAAAC3NzaC1lZDI1NTE5' }, /public host key/],
  [{ hostKey: `${HOST_KEY}\nssh-rsa AAAA` }, /public host key/],
  [{ hostKey: 'ssh-dss AAAAB3NzaC1kc3M=' }, /public host key/],
  [{ root: 'box' }, /absolute path/],
  [{ root: '/' }, /other than \//],
  [{ root: '//' }, /other than \//],
  [{ root: '/home/agent/../../etc' }, /'\.\.'/],
  [{ root: '/home/agent box' }, /absolute path/],
  [{ restartCommand: '   ' }, /not blank/],
  [{ restartCommand: 'restart\u0000' }, /control or format characters/],
  [{ runningCommand: 'check\u001b[2J' }, /control or format characters/],
  [{ runningCommand: 'x'.repeat(1001) }, /running/],
  [{ runningCommand: undefined }, /running/],
  [{ stopCommand: '' }, /not blank/],
  [{ stopCommand: 42 }, /stop/],
  [{ password: 'hunter2' }, /password/],
];

describe('SSH box settings: one definition for the API and the driver', () => {
  it.each(rows)('%j: the API and the driver agree (%s)', (change, expected) => {
    const merged: Record<string, unknown> = { ...valid, ...change };
    const stored = Object.fromEntries(Object.entries(merged).filter(([, value]) => value !== undefined));
    const driver = parseSshBoxSettings(stored);
    const api = boxSettingsSchema.safeParse(asBody(stored));
    if (expected === 'ok') {
      expect(typeof driver, JSON.stringify(driver)).toBe('object');
      expect(api.success, JSON.stringify(api.error?.issues)).toBe(true);
      if (api.success && api.data.driver === 'ssh' && typeof driver === 'object') {
        expect(sshSettingsFromBody(api.data)).toEqual(driver);
        expect(sshSettingsToBody(driver)).toEqual({ ...api.data, host_key: driver.hostKey });
      }
    } else {
      expect(typeof driver).toBe('string');
      expect(driver).toMatch(expected);
      expect(api.success).toBe(false);
      expect(JSON.stringify(api.error?.issues)).toMatch(expected);
    }
  });

  it('keeps only the host key type and key, so a pasted .pub file is pinned as ssh-keyscan prints it', () => {
    expect(parseSshBoxSettings({ ...valid, hostKey: `${HOST_KEY} root@box-1` })).toMatchObject({ hostKey: HOST_KEY });
    const body = boxSettingsSchema.parse(asBody({ ...valid, hostKey: `${HOST_KEY} root@box-1` }));
    if (body.driver === 'ssh') expect(sshSettingsFromBody(body).hostKey).toBe(HOST_KEY);
    else expect.unreachable('an SSH body');
  });

  it('the API defaults the port to 22; stored settings must name it', () => {
    const withoutPort: Partial<SshBoxSettings> = { ...valid };
    delete withoutPort.port;
    const api = boxSettingsSchema.parse(asBody(withoutPort));
    expect(api).toMatchObject({ driver: 'ssh', port: 22 });
    expect(parseSshBoxSettings(withoutPort)).toMatch(/port/);
  });

  it('stored settings: the default driver, SSH settings, or what breaks a rule', () => {
    expect(storedSshSettings(null)).toBeNull();
    expect(storedSshSettings({ driver: 'local' })).toBeNull();
    expect(storedSshSettings('ssh')).toBeNull();
    expect(storedSshSettings({ driver: 'ssh', ...valid })).toEqual(valid);
    expect(storedSshSettings({ driver: 'ssh', ...valid, keyRef: '../x' })).toMatch(/keyRef .*no slashes/);
    expect(parseSshBoxSettings(null)).toMatch(/object/);
    expect(parseSshBoxSettings(['x'])).toMatch(/object/);
  });
});
