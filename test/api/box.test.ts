/**
 * A box's connection settings (PUT /workspaces/:id/box, api/routes/workspaces.ts): stored as the
 * driver reads them, shown by GET, refused naming the field.
 */
import { describe, expect, it } from 'vitest';
import { admin, useApiHarness } from '../helpers/api.js';

const harness = useApiHarness('box-tests');

describe('box settings', () => {
  it('a box reached over SSH: settings stored with a pinned host key, shown by GET, back to local; bad settings name the field', async () => {
    const { id } = await harness.createWorkspace();
    const ssh = {
      driver: 'ssh',
      host: '10.0.0.5',
      user: 'agent',
      key_ref: 'fleet-key',
      host_key: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHcUu9gOeOeNK4Jc8Q6kG0xB9Z9nC9ZkcdYPh6lqfA8x',
      root: '/home/agent/box',
      restart_command: 'sudo systemctl restart agent',
      running_command: 'systemctl is-active --quiet agent',
    };
    const set = await harness.api.inject({ method: 'PUT', url: `/workspaces/${id}/box`, headers: admin, payload: ssh });
    expect(set.statusCode, set.body).toBe(200);
    expect(set.json()).toEqual({ status: 'box set', box: { ...ssh, port: 22 } });
    expect(await harness.store.boxSettings.read(id)).toEqual({
      driver: 'ssh',
      host: '10.0.0.5',
      port: 22,
      user: 'agent',
      keyRef: 'fleet-key',
      hostKey: ssh.host_key,
      root: '/home/agent/box',
      restartCommand: 'sudo systemctl restart agent',
      runningCommand: 'systemctl is-active --quiet agent',
    });
    const read = await harness.api.inject({ method: 'GET', url: `/workspaces/${id}`, headers: admin });
    expect(read.json<{ box: unknown }>().box).toEqual({ ...ssh, port: 22 });

    for (const [field, value, says] of [
      ['host_key', 'AAAA', 'public host key'],
      ['key_ref', '../../etc/shadow', 'no slashes'],
      ['root', 'relative/box', 'absolute path'],
      ['root', '//', 'other than /'],
      ['restart_command', '   ', 'not blank'],
      ['port', 70000, 'port'],
    ] as const) {
      const bad = await harness.api.inject({
        method: 'PUT',
        url: `/workspaces/${id}/box`,
        headers: admin,
        payload: { ...ssh, [field]: value },
      });
      expect(bad.statusCode, `${field}: ${bad.body}`).toBe(400);
      expect(bad.body).toContain(says);
    }
    expect(await harness.store.boxSettings.read(id)).toMatchObject({ host: '10.0.0.5' });

    const local = await harness.api.inject({
      method: 'PUT',
      url: `/workspaces/${id}/box`,
      headers: admin,
      payload: { driver: 'local' },
    });
    expect(local.statusCode, local.body).toBe(200);
    expect(await harness.store.boxSettings.read(id)).toBeNull();
    const unknown = await harness.api.inject({
      method: 'PUT',
      url: '/workspaces/nobody-here/box',
      headers: admin,
      payload: { driver: 'local' },
    });
    expect(unknown.statusCode).toBe(404);
  });
});
