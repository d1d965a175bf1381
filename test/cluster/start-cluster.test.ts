/**
 * `npm run start:cluster` as a newcomer runs it (scripts/start-cluster.ts): the Temporal server
 * on its own PostgreSQL, the Web UI, two workers, two APIs behind nginx; the simulator runs
 * against nginx's address unchanged, and Ctrl-C stops every process it started. Run by
 * `npm run test:cluster` (it needs `scripts/toolchain.sh --cluster`), not by `npm test`.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../scripts/ports.js';
import { freshMachineEnv, listening } from '../helpers/start.js';
import { fileScratchDir } from '../helpers/scratch.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const dataDir = fileScratchDir('start-cluster');
// Outside the data folder: the postgres system user must reach it when the tests run as root.
const pgDir = join('/var/tmp/workspace-lifecycle', `cluster-test-${process.pid}`);

let stopAfter: () => Promise<void> = () => Promise.resolve();
afterAll(async () => {
  await stopAfter();
  rmSync(pgDir, { recursive: true, force: true });
});

describe('npm run start:cluster', () => {
  it('comes up behind one address, serves the simulator, and Ctrl-C stops everything', async () => {
    const [temporalPort, uiPort, apiPort, pgPort] = [
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
    ];
    const env = freshMachineEnv({
      WL_DATA_DIR: dataDir,
      TEMPORAL_PORT: String(temporalPort),
      TEMPORAL_UI_PORT: String(uiPort),
      WL_API_PORT: String(apiPort),
      WL_CLUSTER_PG_PORT: String(pgPort),
      WL_CLUSTER_PG_DIR: pgDir,
    });
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/start-cluster.ts'], { cwd: root, env });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    // Whatever fails below, the command is stopped as Ctrl-C stops it, so nothing outlives the test.
    stopAfter = async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
      await exited;
    };
    const deadline = Date.now() + 240_000;
    while (!output.includes('start:cluster: try it')) {
      if (child.exitCode !== null || Date.now() > deadline)
        throw new Error(`start:cluster did not come up:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const api = `http://127.0.0.1:${apiPort}`;
    expect(output).toContain(`start:cluster: API        ${api} (nginx over `);
    // The PostgreSQL of the shape syncs its commits.
    const fsync = execFileSync(
      'psql',
      ['-h', '127.0.0.1', '-p', String(pgPort), '-U', 'postgres', '-tAc', 'SHOW fsync'],
      {
        encoding: 'utf8',
      },
    ).trim();
    expect(fsync).toBe('on');
    const databases = execFileSync(
      'psql',
      ['-h', '127.0.0.1', '-p', String(pgPort), '-U', 'postgres', '-tAc', 'SELECT datname FROM pg_database ORDER BY 1'],
      { encoding: 'utf8' },
    );
    expect(databases.split('\n')).toEqual(
      expect.arrayContaining(['temporal', 'temporal_visibility', 'workspace_lifecycle']),
    );
    expect((await fetch(`${api}/readyz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${uiPort}/`)).status).toBe(200);

    // The simulator, unchanged, against nginx's address: every phase, the kill and restart included.
    const simulated = execFileSync(
      process.execPath,
      ['--import', 'tsx', 'simulator/simulate.ts', '--api', api, '--workspaces', '2'],
      {
        cwd: root,
        env: { ...env, WL_ADMIN_TOKEN: readFileSync(join(dataDir, 'admin-token'), 'utf8') },
        encoding: 'utf8',
        timeout: 240_000,
      },
    );
    expect(simulated).toContain('simulate: every phase succeeded');

    const pids = readFileSync(join(dataDir, 'cluster', 'nginx', 'nginx.pid'), 'utf8').trim();
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(output).toContain('start:cluster: stopped');
    for (const port of [temporalPort, uiPort, apiPort, pgPort])
      expect(await listening(port), `port ${port}`).toBe(false);
    expect(existsSync(`/proc/${pids}`)).toBe(false);
  }, 600_000);
});
