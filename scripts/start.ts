/**
 * Runs the service on one machine: a Temporal dev server (SQLite file and the Web UI, our
 * search attributes registered), the embedded database (PGlite under the data folder, served
 * over the PostgreSQL wire protocol), the worker and the HTTP API. With a Temporal address
 * configured (TEMPORAL_ADDRESS or a temporal.toml profile) or DATABASE_URL set it uses those
 * instead. Without WL_ADMIN_TOKEN it makes one for this run and prints it.
 * Ctrl-C stops the worker (draining in-flight tasks), the API, the runtimes of the local boxes,
 * the database, then the dev server. A dev server left running by an earlier run that was
 * killed (SIGKILL) is stopped before a new one starts. Settings are loaded once (settings.ts)
 * and passed on as values; nothing here writes `process.env`.
 */
import { Connection } from '@temporalio/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { processAlive, stopProcess } from '../activities/box/local.js';
import { startApi, type RunningApi } from '../api/main.js';
import {
  clientConnectionOptions,
  devServerFleetArgs,
  devServerSearchAttributeArgs,
  devServerStorageArgs,
  retireForeignDevServerDatabase,
  withAddress,
  type TemporalSettings,
} from '../connection.js';
import { migrate } from '../db/migrate.js';
import {
  adminTokenPath,
  defaultRuntimeCommand,
  fleetLivenessSettings,
  loadSettings,
  simulatorReposDir,
  workerSettings,
  type Settings,
} from '../settings.js';
import { startTracing } from '../tracing.js';
import {
  createWorker,
  installWorkerRuntime,
  makeVersionCurrent,
  startFleetLiveness,
  type CreatedWorker,
} from '../worker.js';
import { recreateWorkspaces, retireForeignFleetLiveness } from './recreate-workspaces.js';
import { keepSecretsPrivate, stopBoxRuntimes } from './local-data.js';
import { temporalCliPath, temporalCliVersion } from './toolchain.js';
import { startEmbeddedDatabase, type EmbeddedDatabase } from '../db/embedded.js';

let loaded: Settings;
try {
  loaded = loadSettings();
} catch (err) {
  console.error(`start: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
const settings = loaded;
const { dataDir } = settings;
const { temporalPort: port, uiPort } = settings.local;
/** The dev server this command started, so the next run can stop one a killed run left behind. */
const devServerPidFile = join(dataDir, 'temporal-dev-server.pid');

/** Stops a dev server an earlier run left running (that run was SIGKILLed before it could). */
async function stopLeftoverDevServer(): Promise<void> {
  const pid = Number(readFileSafe(devServerPidFile) ?? NaN);
  if (!Number.isInteger(pid) || pid <= 0 || !processAlive(pid)) return;
  const command = readFileSafe(`/proc/${pid}/cmdline`)?.split('\0') ?? [];
  if (!command.includes('start-dev') || !command.includes(join(dataDir, 'temporal.db'))) return;
  console.log(`start: stopping the dev server an earlier run left running (pid ${pid})`);
  await stopProcess(pid, 10_000);
}

function readFileSafe(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function startDevServer(): ChildProcess {
  const cli = temporalCliPath();
  if (cli === undefined) throw new Error('Temporal CLI not found: run `npm run toolchain` or set TEMPORAL_CLI_PATH');
  mkdirSync(dataDir, { recursive: true });
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), '--ui-port', String(uiPort)];
  const dbFile = join(dataDir, 'temporal.db');
  const retired = retireForeignDevServerDatabase(dbFile, temporalCliVersion());
  if (retired !== null)
    console.log(
      `start: ${dbFile} was made by another dev server version, which cannot open it: moved to ${retired}; ` +
        'its workspaces are recreated from the database',
    );
  args.push(
    ...devServerStorageArgs(dbFile),
    ...devServerFleetArgs(dbFile),
    '--log-level',
    'warn',
    ...devServerSearchAttributeArgs(),
  );
  console.log(`start: temporal ${args.join(' ')}`);
  // Its own process group: Ctrl-C reaches only us, so the worker drains against a live server
  // before we stop the server ourselves.
  const child = spawn(cli, args, { stdio: ['ignore', 'inherit', 'inherit'], detached: true });
  process.once('exit', () => child.kill('SIGTERM'));
  if (child.pid !== undefined) writeFileSync(devServerPidFile, String(child.pid));
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

keepSecretsPrivate(dataDir, settings.sshKeyDir);
const configured = settings.temporal;
if (configured.address === undefined) await stopLeftoverDevServer();
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
  let databaseUrl = settings.databaseUrl;
  if (databaseUrl === undefined) {
    console.log(`start: opening the embedded database in ${join(dataDir, 'pglite')} (the first run creates it)`);
    embedded = await startEmbeddedDatabase({ dataDir: join(dataDir, 'pglite'), port: settings.local.embeddedDbPort });
    databaseUrl = embedded.url;
  }
  await run(databaseUrl);
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
    rmSync(devServerPidFile, { force: true });
  }
}
console.log('start: stopped');
// A worker created but never run (stopped during startup) would keep its native handles open.
process.exit();

async function run(databaseUrl: string): Promise<void> {
  const temporal: TemporalSettings =
    configured.address === undefined ? withAddress(configured, `127.0.0.1:${port}`) : configured;
  const generatedAdminToken = settings.api.adminToken === undefined;
  // What this command adds to the loaded settings: the local database and dev server, an admin
  // token, loopback URLs for local boxes (unless configured), the simulated runtime in each box,
  // and git+file:// sources from the simulator's repositories (unless configured).
  const urlPolicy = {
    ...settings.api.urlPolicy,
    allowLoopback: settings.api.loopbackConfigured ? settings.api.urlPolicy.allowLoopback : true,
  };
  const effective: Settings = {
    ...settings,
    sources: {
      ...settings.sources,
      fileRoots: settings.fileRootsConfigured ? settings.sources.fileRoots : [simulatorReposDir(settings.dataDir)],
      urlPolicy,
    },
    temporal,
    databaseUrl,
    runtimeCommand: settings.runtimeCommand ?? defaultRuntimeCommand(),
    api: {
      ...settings.api,
      adminToken: settings.api.adminToken ?? randomBytes(24).toString('base64url'),
      urlPolicy,
    },
  };
  console.log(`start: waiting for Temporal at ${temporal.address}`);
  await waitForTemporal(temporal, 60_000);
  checkStop();
  await migrate(databaseUrl);
  // Before the API and the worker, which both trace: one service here.
  const tracing = startTracing('workspace-lifecycle', effective.tracing);
  const workerMetrics = installWorkerRuntime(effective.metricsAddress);
  // The API first: the runtimes the worker starts in local boxes need its URL.
  const api = await startApi(effective);
  let worker: Awaited<ReturnType<typeof createWorker>> | undefined;
  try {
    worker = await createWorker(workerSettings(effective, { WL_API_URL: api.url }));
    if (generatedAdminToken) {
      // The simulator (npm run simulate) reads the generated admin token from here.
      // Created new, private from the start: never written through a link left in its place.
      rmSync(adminTokenPath(), { force: true });
      writeFileSync(adminTokenPath(), effective.api.adminToken ?? '', { mode: 0o600, flag: 'wx' });
    }
    printUrls(effective, api, generatedAdminToken, workerMetrics);
    checkStop();
    const running = worker.worker.run(); // returns after SIGINT/SIGTERM once in-flight tasks drained
    // Beside the worker, which it needs; Ctrl-C does not wait for it.
    void adoptWorkspaces(worker, effective).catch((err: unknown) => {
      if (stopRequested === 0) console.error(`start: ${err instanceof Error ? err.message : String(err)}`);
    });
    await running;
  } finally {
    await api.close();
    const stopped = await stopBoxRuntimes(effective.boxesDir);
    if (stopped > 0) console.log(`start: stopped ${stopped} box runtime(s)`);
    await worker?.store.close();
    await worker?.connection.close();
    await tracing?.shutdown();
  }
}

/**
 * This worker's build becomes the deployment's current one, so new workspaces start on it and
 * running ones move to it as they continue as new. With the dev server this command runs, its
 * worker is the only one: workspaces (and the fleet liveness controller) whose runs no worker of
 * this build serves are recreated. The controller is started, as every worker starts it.
 */
async function adoptWorkspaces(worker: CreatedWorker, effective: Settings): Promise<void> {
  const { namespace } = effective.temporal;
  if (worker.version !== null) {
    const made = await makeVersionCurrent(worker.connection, namespace, worker.version);
    console.log(`start: worker build ${worker.version.buildId} is current (${made})`);
  }
  const client = worker.client;
  if (devServer !== undefined && worker.version !== null) await retireForeignFleetLiveness(client, worker.version);
  await startFleetLiveness(client, effective.taskQueue, fleetLivenessSettings(effective));
  if (devServer === undefined) return;
  const { terminated, recreated } = await recreateWorkspaces({
    client,
    store: worker.store,
    taskQueue: effective.taskQueue,
    lifecycle: effective.api.lifecycle,
    version: worker.version,
  });
  if (recreated > 0 || terminated > 0)
    console.log(
      `start: recreated ${recreated} workspace(s) from the database (${terminated} run(s) of another build terminated)`,
    );
}

function printUrls(
  effective: Settings,
  api: RunningApi,
  generatedAdminToken: boolean,
  workerMetrics: string | null,
): void {
  const { temporal } = effective;
  console.log(`start: Temporal   ${temporal.address ?? ''} (namespace ${temporal.namespace})`);
  console.log(
    `start: database   ${embedded ? `embedded PGlite in ${join(dataDir, 'pglite')} at ` : ''}${effective.databaseUrl ?? ''}`,
  );
  if (devServer) console.log(`start: Web UI     http://127.0.0.1:${uiPort}`);
  console.log(`start: API        ${api.url} (OpenAPI at ${api.url}/openapi.json)`);
  console.log(
    `start: metrics    ${api.url}/metrics (API)${workerMetrics === null ? '' : `, ${workerMetrics} (worker)`}`,
  );
  console.log(`start: events     ${api.url}/events (status changes, admin token)`);
  if (effective.tracing !== null) console.log(`start: traces     ${effective.tracing.url}`);
  if (generatedAdminToken)
    console.log(`start: admin token ${effective.api.adminToken ?? ''} (set WL_ADMIN_TOKEN to choose one)`);
  console.log(`start: worker     polling task queue ${effective.taskQueue}; Ctrl-C to stop`);
  console.log('start: try it     npm run simulate   (in another terminal)');
}
