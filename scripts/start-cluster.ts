/**
 * `npm run start:cluster`: the production shape on one machine. A Temporal server (not the dev
 * server) on a PostgreSQL cluster of its own with fsync on, holding Temporal's persistence and
 * visibility and the service's database in separate databases; the Temporal Web UI; two workers
 * and two API processes; nginx in front of the APIs on one address, the API address `npm start`
 * uses (WL_API_PORT, 8080), so `npm run simulate` runs against it unchanged.
 *
 *   npm run start:cluster [-- --workers 2 --apis 2]
 *
 * Ctrl-C stops the workers (draining in-flight tasks), the APIs, nginx, the box runtimes, the
 * Web UI, the Temporal server, then PostgreSQL. The servers' logs go to files under
 * <data dir>/cluster/logs; the workers' and APIs' lines are printed with their names.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { migrate } from '../db/migrate.js';
import { adminTokenPath, defaultRuntimeCommand, loadSettings, simulatorReposDir, type Settings } from '../settings.js';
import { untilApiAnswers } from '../bench/harness/stack.js';
import { bundleInChildProcess } from '../workflow-bundle.js';
import { buildService, distDir } from './build.js';
import {
  clusterBinaries,
  clusterPostgres,
  ensureDatabase,
  nginxPath,
  setUpTemporalSchemas,
  spawnNginx,
  spawnTemporalServer,
  spawnUiServer,
  stopClusterPostgres,
  untilNamespaceServes,
  writeTemporalServerConfig,
  type PostgresAddress,
  type TemporalServerPorts,
  MEMBERSHIP_PORT_LIMIT,
} from './cluster.js';
import { keepSecretsPrivate, stopBoxRuntimes } from './local-data.js';
import { freePort, freePortBelow } from './ports.js';

const root = fileURLToPath(new URL('../', import.meta.url));
const START_TIMEOUT_MS = 120_000;

let settings: Settings;
let counts: { workers: number; apis: number };
try {
  settings = loadSettings();
  const { values } = parseArgs({
    options: { workers: { type: 'string', default: '2' }, apis: { type: 'string', default: '2' } },
  });
  const count = (flag: string, text: string): number => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1 || n > 16) throw new Error(`--${flag} must be a whole number from 1 to 16`);
    return n;
  };
  counts = { workers: count('workers', values.workers), apis: count('apis', values.apis) };
} catch (err) {
  console.error(`start:cluster: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(2);
}
const say = (line: string): void => console.log(`start:cluster: ${line}`);
const clusterDir = join(settings.dataDir, 'cluster');
const logsDir = join(clusterDir, 'logs');

interface Running {
  name: string;
  child: ChildProcess;
}
/** What this command started, in start order; stopped in reverse. */
const servers: Running[] = [];
const services: Running[] = [];
/** Set once a stop began: exits after it are expected. */
const state = { stopping: false };

/** A child's output into its log file, and onto the terminal with its name when `echo`. */
function follow(name: string, child: ChildProcess, echo: boolean): void {
  const log = createWriteStream(join(logsDir, `${name}.log`), { flags: 'a' });
  for (const stream of [child.stdout, child.stderr]) {
    if (stream === null) continue;
    stream.pipe(log);
    if (echo) createInterface({ input: stream }).on('line', (line) => console.log(`[${name}] ${line}`));
  }
  child.once('exit', (code, signal) => {
    if (state.stopping) return;
    console.error(`start:cluster: ${name} exited (${signal ?? `code ${code ?? '?'}`}); stopping`);
    process.exitCode = 1;
    void stop();
  });
}

function node(name: string, script: string, env: NodeJS.ProcessEnv, jemalloc: boolean): ChildProcess {
  const args = [join(distDir, script)];
  const child = jemalloc
    ? spawn('bash', [join(root, 'scripts', 'jemalloc.sh'), process.execPath, ...args], { cwd: root, env })
    : spawn(process.execPath, args, { cwd: root, env });
  follow(name, child, true);
  return child;
}

/** Stops what runs, services first (workers drain), then the servers; resolves when all exited. */
let stopped: Promise<void> | undefined;
let stopCalled: () => void = () => undefined;
const stopRequested = new Promise<void>((resolve) => (stopCalled = resolve));
function stop(): Promise<void> {
  stopCalled();
  stopped ??= (async () => {
    state.stopping = true;
    const end = async ({ child }: Running, signal: NodeJS.Signals): Promise<void> => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill(signal);
      await exited;
    };
    await Promise.all(services.map((s) => end(s, 'SIGTERM')));
    const runtimes = await stopBoxRuntimes(settings.boxesDir);
    if (runtimes > 0) say(`stopped ${runtimes} box runtime(s)`);
    for (const server of [...servers].reverse()) await end(server, server.name === 'nginx' ? 'SIGQUIT' : 'SIGTERM');
    stopClusterPostgres();
  })();
  return stopped;
}

// Ctrl-C reaches every process of the terminal's group (the workers and APIs drain on it) and npm
// relays it again: the first signal stops everything in order, a third stops at once.
let signals = 0;
let lastSignalAt = 0;
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.on(signal, () => {
    if (Date.now() - lastSignalAt < 1_000) return;
    lastSignalAt = Date.now();
    signals++;
    process.exitCode ??= 130;
    if (signals === 1) {
      say('stopping (Ctrl-C twice more to stop at once)');
      void stop();
    }
    if (signals >= 3) {
      for (const { child } of [...services, ...servers]) child.kill('SIGKILL');
      process.exit();
    }
  });

async function run(): Promise<void> {
  keepSecretsPrivate(settings.dataDir, settings.sshKeyDir);
  mkdirSync(logsDir, { recursive: true });
  const binaries = clusterBinaries();
  const nginx = nginxPath();

  // PostgreSQL: the cluster's own (fsync on), or the service's database where DATABASE_URL names one.
  const pg: PostgresAddress = clusterPostgres();
  say(
    `PostgreSQL ${pg.host}:${pg.port} (fsync on): ${setUpTemporalSchemas(binaries, pg).join('; ') || 'schemas current'}`,
  );
  const databaseUrl = settings.databaseUrl ?? ensureDatabase(pg, 'workspace_lifecycle');
  await migrate(databaseUrl);

  const ports: TemporalServerPorts = {
    frontend: settings.local.temporalPort,
    frontendHttp: await freePort(),
    history: await freePort(),
    matching: await freePort(),
    worker: await freePort(),
    frontendMembership: await freePortBelow(MEMBERSHIP_PORT_LIMIT),
    historyMembership: await freePortBelow(MEMBERSHIP_PORT_LIMIT),
    matchingMembership: await freePortBelow(MEMBERSHIP_PORT_LIMIT),
    workerMembership: await freePortBelow(MEMBERSHIP_PORT_LIMIT),
    metrics: await freePort(),
  };
  const temporalAddress = `127.0.0.1:${ports.frontend}`;
  const configFile = writeTemporalServerConfig(clusterDir, { ports, pg, logLevel: 'warn' });
  say(`Temporal server on ${temporalAddress} (config ${configFile})`);
  const temporal = spawnTemporalServer(binaries, configFile);
  servers.push({ name: 'temporal', child: temporal });
  follow('temporal', temporal, false);
  const namespace = settings.temporal.namespace;
  await untilNamespaceServes(temporalAddress, namespace, Date.now() + START_TIMEOUT_MS);

  const ui = spawnUiServer(binaries, clusterDir, { temporalAddress, port: settings.local.uiPort });
  servers.push({ name: 'ui', child: ui });
  follow('ui', ui, false);

  // Bundled once here for every worker (each would bundle again), and the service compiled.
  const workflowBundle = join(clusterDir, 'workflow-bundle.js');
  const [{ code }] = await Promise.all([bundleInChildProcess(), buildService()]);
  writeFileSync(workflowBundle, code);

  const adminToken = settings.api.adminToken ?? randomBytes(24).toString('base64url');
  const apiUrl = `http://127.0.0.1:${settings.api.port}`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TEMPORAL_ADDRESS: temporalAddress,
    TEMPORAL_NAMESPACE: namespace,
    DATABASE_URL: databaseUrl,
    WL_ADMIN_TOKEN: adminToken,
    WL_WORKFLOW_BUNDLE: workflowBundle,
    // A line per request from two APIs would drown the rest; LOG_LEVEL=info shows them.
    LOG_LEVEL: process.env['LOG_LEVEL'] ?? 'warn',
    // What `npm start` adds for local boxes, unless configured: loopback URLs, the simulated
    // runtime in each box, the simulator's plugin repositories.
    WL_ALLOW_LOOPBACK_URLS: process.env['WL_ALLOW_LOOPBACK_URLS'] ?? 'true',
    WL_RUNTIME_COMMAND: process.env['WL_RUNTIME_COMMAND'] ?? JSON.stringify(defaultRuntimeCommand()),
    WL_PLUGIN_SOURCE_FILE_ROOTS: process.env['WL_PLUGIN_SOURCE_FILE_ROOTS'] ?? simulatorReposDir(settings.dataDir),
  };

  const apiPorts = await Promise.all(Array.from({ length: counts.apis }, () => freePort()));
  apiPorts.forEach((port, i) =>
    services.push({
      name: `api-${i + 1}`,
      child: node(`api-${i + 1}`, 'api/main.js', { ...env, WL_API_PORT: String(port) }, false),
    }),
  );
  for (const port of apiPorts)
    await untilApiAnswers(`http://127.0.0.1:${port}`, Date.now() + START_TIMEOUT_MS, () => state.stopping);

  const lb = spawnNginx(nginx, join(clusterDir, 'nginx'), {
    listen: `127.0.0.1:${settings.api.port}`,
    upstreams: apiPorts.map((port) => `127.0.0.1:${port}`),
  });
  servers.push({ name: 'nginx', child: lb });
  follow('nginx', lb, true);
  await untilApiAnswers(apiUrl, Date.now() + START_TIMEOUT_MS, () => state.stopping);

  // The runtimes in local boxes call the API through nginx, as runtimes on other machines would.
  // Each worker serves its metrics on a port of its own.
  for (let i = 0; i < counts.workers; i++) {
    const metrics = await freePort();
    services.push({
      name: `worker-${i + 1}`,
      child: node(
        `worker-${i + 1}`,
        'worker.js',
        { ...env, WL_API_URL: apiUrl, WL_WORKER_METRICS_ADDR: `127.0.0.1:${metrics}` },
        true,
      ),
    });
  }

  if (settings.api.adminToken === undefined) {
    // The simulator (npm run simulate) reads the generated admin token from here; created new and
    // private from the start, never written through a link left in its place.
    rmSync(adminTokenPath(), { force: true });
    writeFileSync(adminTokenPath(), adminToken, { mode: 0o600, flag: 'wx' });
  }
  say(`Temporal   ${temporalAddress} (namespace ${namespace}; server ${binaries.temporalServer})`);
  say(`database   ${databaseUrl}`);
  say(`Web UI     http://127.0.0.1:${settings.local.uiPort}`);
  say(`API        ${apiUrl} (nginx over ${apiPorts.map((port) => `127.0.0.1:${port}`).join(', ')})`);
  if (settings.api.adminToken === undefined) say(`admin token ${adminToken} (set WL_ADMIN_TOKEN to choose one)`);
  say(`workers    ${counts.workers} polling task queue ${settings.taskQueue}; logs in ${logsDir}; Ctrl-C to stop`);
  say('try it     npm run simulate   (in another terminal)');
}

try {
  await run();
  await stopRequested;
} catch (err) {
  if (!state.stopping) {
    console.error(`start:cluster: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  }
}
await stop();
say('stopped');
process.exit();
