/**
 * Runs the service on one machine: a Temporal dev server (SQLite file under data/, Web UI),
 * a local PostgreSQL cluster (scripts/postgres.sh), the worker and the HTTP API. With
 * TEMPORAL_ADDRESS or DATABASE_URL set it uses those instead. Without WL_ADMIN_TOKEN it makes
 * one for this run and prints it.
 * Ctrl-C stops the worker (draining in-flight tasks) and then the dev server.
 */
import { Connection } from '@temporalio/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dataDir as resolveDataDir } from '../activities/settings.js';
import { startApi } from '../api/main.js';
import { createWorker, workerSettingsFromEnv } from '../worker.js';
import { temporalCliPath } from './toolchain.js';
import { localDatabaseUrl } from './postgres.js';

const dataDir = resolveDataDir();
const port = Number(process.env['TEMPORAL_PORT'] ?? 7233);
const uiPort = Number(process.env['TEMPORAL_UI_PORT'] ?? 8233);

function startDevServer(): ChildProcess {
  const cli = temporalCliPath();
  if (cli === undefined) throw new Error('Temporal CLI not found: run `npm run toolchain` or set TEMPORAL_CLI_PATH');
  mkdirSync(dataDir, { recursive: true });
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), '--ui-port', String(uiPort)];
  args.push('--db-filename', join(dataDir, 'temporal.db'), '--log-level', 'warn');
  console.log(`start: temporal ${args.join(' ')}`);
  // Its own process group: Ctrl-C reaches only us, so the worker drains against a live server
  // before we stop the server ourselves.
  const child = spawn(cli, args, { stdio: ['ignore', 'inherit', 'inherit'], detached: true });
  process.once('exit', () => child.kill('SIGTERM'));
  return child;
}

async function waitForTemporal(address: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const connection = await Connection.connect({ address, connectTimeout: 1_000 });
      await connection.close();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`Temporal at ${address} not reachable: ${String(err)}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

process.env['DATABASE_URL'] ??= localDatabaseUrl('workspace_lifecycle');
const external = process.env['TEMPORAL_ADDRESS'];
const devServer = external === undefined ? startDevServer() : undefined;
// Local boxes run the simulated runtime (simulator/runtime.ts) unless told otherwise; it finds the
// API through WL_API_URL, set below once the API listens.
process.env['WL_RUNTIME_COMMAND'] ??= JSON.stringify([
  process.execPath,
  '--import',
  import.meta.resolve('tsx/esm'),
  fileURLToPath(new URL('../simulator/runtime.ts', import.meta.url)),
]);
const settings = { ...workerSettingsFromEnv(), address: external ?? `127.0.0.1:${port}` };
await waitForTemporal(settings.address, 60_000);
const { worker, store } = await createWorker(settings);
const generatedAdminToken = process.env['WL_ADMIN_TOKEN'] === undefined;
process.env['WL_ADMIN_TOKEN'] ??= randomBytes(24).toString('base64url');
// Local boxes serve their agents on loopback.
process.env['WL_ALLOW_LOOPBACK_URLS'] ??= 'true';
const api = await startApi({ ...process.env, TEMPORAL_ADDRESS: settings.address });
process.env['WL_API_URL'] = api.url;
if (generatedAdminToken) {
  // The simulator (npm run simulate) reads the generated admin token from here.
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(join(dataDir, 'admin-token'), process.env['WL_ADMIN_TOKEN'], { mode: 0o600 });
}

console.log(`start: Temporal   ${settings.address} (namespace ${settings.namespace})`);
console.log(`start: database   ${settings.databaseUrl}`);
if (devServer) console.log(`start: Web UI     http://127.0.0.1:${uiPort}`);
console.log(`start: API        ${api.url} (OpenAPI at ${api.url}/openapi.json)`);
if (generatedAdminToken)
  console.log(`start: admin token ${process.env['WL_ADMIN_TOKEN']} (set WL_ADMIN_TOKEN to choose one)`);
console.log(`start: worker     polling task queue ${settings.taskQueue}; Ctrl-C to stop`);

await worker.run(); // returns after SIGINT/SIGTERM once in-flight tasks drained
await api.close();
await store.close();
if (devServer) {
  devServer.kill('SIGTERM');
  await new Promise((resolve) => devServer.once('exit', resolve));
}
console.log('start: stopped');
