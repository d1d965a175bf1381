/**
 * The README's first command, as a newcomer runs it (scripts/start.ts, without DATABASE_URL or a
 * Temporal address): it brings up the dev server with the Web UI, the embedded database, the
 * worker and the API, prints their URLs, stops everything on Ctrl-C, and a second run over the
 * same data folder, as one from before (its dev server database another version made), finds the
 * workspace the first one created, recreated from the database. The secrets it keeps there (the
 * admin token, the SSH keys) are its user's alone, even in a data folder others could read before.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, inject, it } from 'vitest';
import { freePort } from '../../scripts/ports.js';
import { freshMachineEnv, listening } from '../helpers/start.js';
import { fileScratchDir } from '../helpers/scratch.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const dataDir = fileScratchDir('start');

interface Started {
  child: ChildProcess;
  output: () => string;
  api: string;
  ui: string;
  temporalPort: number;
}

/** `npm start` as a newcomer runs it. */
async function start(): Promise<Started> {
  const [temporalPort, uiPort, apiPort] = [await freePort(), await freePort(), await freePort()];
  const env = freshMachineEnv({
    WL_DATA_DIR: dataDir,
    TEMPORAL_PORT: String(temporalPort),
    TEMPORAL_UI_PORT: String(uiPort),
    WL_API_PORT: String(apiPort),
    LOG_LEVEL: 'warn',
    // The bundle the test run built the worker's own way (`bundleInChildProcess`), once.
    WL_WORKFLOW_BUNDLE: inject('workflowBundlePath'),
  });
  const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/start.ts'], { cwd: root, env });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const deadline = Date.now() + 90_000;
  while (!output.includes('start: try it')) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`npm start did not come up:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return {
    child,
    output: () => output,
    api: `http://127.0.0.1:${apiPort}`,
    ui: `http://127.0.0.1:${uiPort}`,
    temporalPort,
  };
}

/** Ctrl-C; resolves with the exit code once the process is gone. */
function interrupt(started: Started): Promise<number | null> {
  const exited = new Promise<number | null>((resolve) => started.child.once('exit', (code) => resolve(code)));
  started.child.kill('SIGINT');
  return exited;
}

describe('npm start', () => {
  it('brings up the whole stack, stops it on Ctrl-C, and keeps its workspaces over a dev server database from before', async () => {
    const first = await start();
    let runtimeToken = '';
    const adminToken = readFileSync(join(dataDir, 'admin-token'), 'utf8');
    expect(statSync(join(dataDir, 'admin-token')).mode & 0o777).toBe(0o600);
    const admin = { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' };
    try {
      expect(first.output()).toContain(`start: Web UI     ${first.ui}`);
      expect(first.output()).toContain(`start: API        ${first.api}`);
      expect(first.output()).toContain(`start: database   embedded PGlite in ${join(dataDir, 'pglite')}`);
      expect(first.output()).toContain(`start: admin token ${adminToken}`);
      expect(await (await fetch(`${first.api}/readyz`)).json()).toEqual({ temporal: 'ok', database: 'ok' });
      expect((await fetch(first.ui)).status).toBe(200);
      const created = await fetch(`${first.api}/workspaces`, {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ id: 'kept-1', plugins: [] }),
      });
      expect(created.status).toBe(201);
      runtimeToken = ((await created.json()) as { auth_token: string }).auth_token;
    } finally {
      expect(await interrupt(first)).toBe(130);
    }
    expect(first.output()).toContain('start: stopped');
    // Nothing is left behind: the dev server stopped with the command.
    expect(await listening(first.temporalPort)).toBe(false);

    // The next run over a data folder from before: its dev server database was made by a version
    // that did not record itself, so it is moved aside. The workspace is still there, in the
    // database and, recreated from it, in Temporal; its runtime's register (with the token it got
    // at creation) brings it online with a reconcile. Its secrets were readable by others (made
    // by hand, or before the modes were set).
    rmSync(join(dataDir, 'temporal.db.server'));
    chmodSync(dataDir, 0o755);
    chmodSync(join(dataDir, 'admin-token'), 0o644);
    mkdirSync(join(dataDir, 'ssh-keys'), { mode: 0o755 });
    chmodSync(join(dataDir, 'ssh-keys'), 0o755);
    const second = await start();
    try {
      const mode = (path: string): string => (statSync(join(dataDir, path)).mode & 0o777).toString(8);
      expect([mode('.'), mode('admin-token'), mode('ssh-keys')]).toEqual(['700', '600', '700']);
      expect(second.output()).toContain('was made by another dev server version');
      // The generated admin token is new.
      const token = readFileSync(join(dataDir, 'admin-token'), 'utf8');
      const headers = { authorization: `Bearer ${token}` };
      const listed = await fetch(`${second.api}/workspaces`, { headers });
      expect(((await listed.json()) as { workspaces: { id: string }[] }).workspaces.map((w) => w.id)).toEqual([
        'kept-1',
      ]);
      const deadline = Date.now() + 60_000;
      while (!second.output().includes('start: recreated') && Date.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 200));
      expect(second.output()).toContain('start: recreated 1 workspace(s) from the database');
      const recreated = await fetch(`${second.api}/workspaces/kept-1`, { headers });
      expect(recreated.status).toBe(200);
      expect(((await recreated.json()) as { status: string }).status).toBe('provisioning');
      const registered = await fetch(`${second.api}/registry/register`, {
        method: 'POST',
        headers: { authorization: `Bearer ${runtimeToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ id: 'kept-1', url: 'http://127.0.0.1:9/agent', agent_card: { name: 'kept' } }),
      });
      expect(registered.status).toBe(200);
      let state: { status?: string; reconcile?: { lastFinishedAt: string | null } } = {};
      while (!(state.status === 'online' && state.reconcile?.lastFinishedAt) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        state = (await (await fetch(`${second.api}/workspaces/kept-1`, { headers })).json()) as typeof state;
      }
      expect(state.status).toBe('online');
      expect(state.reconcile?.lastFinishedAt).toBeTruthy();
    } finally {
      expect(await interrupt(second)).toBe(130);
    }
  }, 240_000);
});
