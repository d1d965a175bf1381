/**
 * Runs the service on one machine: a Temporal dev server (SQLite file and the Web UI, our
 * search attributes registered), the embedded database (PGlite under the data folder, served
 * over the PostgreSQL wire protocol), the worker and the HTTP API. With a Temporal address
 * configured (TEMPORAL_ADDRESS or a temporal.toml profile) or DATABASE_URL set it uses those
 * instead. Without WL_ADMIN_TOKEN it makes one for this run and prints it.
 * Ctrl-C stops the worker (draining in-flight tasks), the API, the database, then the dev server.
 */
import { Connection } from '@temporalio/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminTokenPath, dataDir as resolveDataDir, defaultRuntimeCommand } from '../activities/settings.js';
import { startApi } from '../api/main.js';
import {
  clientConnectionOptions,
  devServerSearchAttributeArgs,
  temporalSettingsFromEnv,
  withAddress,
  type TemporalSettings,
} from '../connection.js';
import { createWorker, workerSettingsFromEnv } from '../worker.js';
import { temporalCliPath } from './toolchain.js';
import { startEmbeddedDatabase, type EmbeddedDatabase } from '../db/embedded.js';

const dataDir = resolveDataDir();
const port = Number(process.env['TEMPORAL_PORT'] ?? 7233);
const uiPort = Number(process.env['TEMPORAL_UI_PORT'] ?? 8233);

function startDevServer(): ChildProcess {
  const cli = temporalCliPath();
  if (cli === undefined) throw new Error('Temporal CLI not found: run `npm run toolchain` or set TEMPORAL_CLI_PATH');
  mkdirSync(dataDir, { recursive: true });
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), '--ui-port', String(uiPort)];
  args.push('--db-filename', join(dataDir, 'temporal.db'), '--log-level', 'warn', ...devServerSearchAttributeArgs());
  console.log(`start: temporal ${args.join(' ')}`);
  // Its own process group: Ctrl-C reaches only us, so the worker drains against a live server
  // before we stop the server ourselves.
  const child = spawn(cli, args, { stdio: ['ignore', 'inherit', 'inherit'], detached: true });
  process.once('exit', () => child.kill('SIGTERM'));
  return child;
}

async function waitForTemporal(temporal: TemporalSettings, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const connection = await Connection.connect({ ...clientConnectionOptions(temporal), connectTimeout: 1_000 });
      await connection.close();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`Temporal at ${temporal.address} not reachable: ${String(err)}`);
      checkStop();
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

// Ctrl-C reaches every process of the terminal's group and npm relays it again, so this process
// may see one Ctrl-C as several signals: those within a second count once. The worker drains on
// the first (the SDK's own handler); this listener keeps a repeat from killing the process before
// it has closed the database and stopped the dev server. A signal during startup stops it at the
// next step; a third Ctrl-C stops at once.
let stopRequested = 0;
let lastSignalAt = 0;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    const now = Date.now();
    if (now - lastSignalAt < 1_000) return;
    lastSignalAt = now;
    stopRequested++;
    process.exitCode ??= 130;
    if (stopRequested === 1) console.log('start: stopping (Ctrl-C twice more to stop at once)');
    if (stopRequested < 3) return;
    devServer?.kill('SIGKILL');
    process.exit();
  });
}
class StopRequested extends Error {}
function checkStop(): void {
  if (stopRequested > 0) throw new StopRequested('stopped during startup');
}

const configured = temporalSettingsFromEnv();
const devServer = configured.address === undefined ? startDevServer() : undefined;
let stopping = false;
// A dev server that dies on its own (its port taken, a corrupt database file) stops everything.
devServer?.once('exit', (code, signal) => {
  if (stopping) return;
  console.error(`start: the Temporal dev server exited (${signal ?? `code ${code ?? '?'}`}); stopping`);
  process.exitCode = 1;
  process.kill(process.pid, 'SIGTERM'); // stops the worker too, as Ctrl-C does
});
let embedded: EmbeddedDatabase | undefined;
try {
  if (process.env['DATABASE_URL'] === undefined) {
    console.log(`start: opening the embedded database in ${join(dataDir, 'pglite')} (the first run creates it)`);
    embedded = await startEmbeddedDatabase({
      dataDir: join(dataDir, 'pglite'),
      port: Number(process.env['WL_EMBEDDED_DB_PORT'] ?? 0),
    });
    process.env['DATABASE_URL'] = embedded.url;
  }
  await run();
} catch (err) {
  console.error(`start: ${err instanceof Error ? err.message : String(err)}`);
  if (!(err instanceof StopRequested)) process.exitCode = 1;
} finally {
  stopping = true;
  await embedded?.close();
  if (devServer && devServer.exitCode === null && devServer.signalCode === null) {
    const exited = new Promise((resolve) => devServer.once('exit', resolve));
    devServer.kill('SIGTERM');
    await exited;
  }
}
console.log('start: stopped');
// A worker created but never run (stopped during startup) would keep its native handles open.
process.exit();

async function run(): Promise<void> {
  // Local boxes run the simulated runtime (simulator/runtime.ts) unless told otherwise; it finds
  // the API through WL_API_URL, set below once the API listens.
  process.env['WL_RUNTIME_COMMAND'] ??= JSON.stringify(defaultRuntimeCommand());
  const temporal = configured.address === undefined ? withAddress(configured, `127.0.0.1:${port}`) : configured;
  const settings = { ...workerSettingsFromEnv(), temporal };
  console.log(`start: waiting for Temporal at ${temporal.address}`);
  await waitForTemporal(temporal, 60_000);
  checkStop();
  const { worker, store } = await createWorker(settings);
  const generatedAdminToken = process.env['WL_ADMIN_TOKEN'] === undefined;
  process.env['WL_ADMIN_TOKEN'] ??= randomBytes(24).toString('base64url');
  // Local boxes serve their agents on loopback.
  process.env['WL_ALLOW_LOOPBACK_URLS'] ??= 'true';
  const api = await startApi({ ...process.env, TEMPORAL_ADDRESS: temporal.address });
  process.env['WL_API_URL'] = api.url;
  if (generatedAdminToken) {
    // The simulator (npm run simulate) reads the generated admin token from here.
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(adminTokenPath(), process.env['WL_ADMIN_TOKEN'], { mode: 0o600 });
  }

  console.log(`start: Temporal   ${temporal.address} (namespace ${temporal.namespace})`);
  console.log(
    `start: database   ${embedded ? `embedded PGlite in ${join(dataDir, 'pglite')} at ` : ''}${settings.databaseUrl}`,
  );
  if (devServer) console.log(`start: Web UI     http://127.0.0.1:${uiPort}`);
  console.log(`start: API        ${api.url} (OpenAPI at ${api.url}/openapi.json)`);
  if (generatedAdminToken)
    console.log(`start: admin token ${process.env['WL_ADMIN_TOKEN']} (set WL_ADMIN_TOKEN to choose one)`);
  console.log(`start: worker     polling task queue ${settings.taskQueue}; Ctrl-C to stop`);
  console.log('start: try it     npm run simulate   (in another terminal)');

  try {
    checkStop();
    await worker.run(); // returns after SIGINT/SIGTERM once in-flight tasks drained
  } finally {
    await api.close();
    await store.close();
  }
}
