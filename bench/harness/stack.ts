/**
 * The real pieces, each its own process on free loopback ports, for the fault-injection rows
 * (chaos/) and the fleet bench: a PostgreSQL cluster of its own (scripts/postgres.sh), a Temporal
 * dev server on a SQLite file, the worker (`worker.ts`) and the API (`api/main.ts`). Each can be
 * stopped, killed and started again; exits nobody asked for are recorded, so a row can say "no
 * process crashed". Several workers and APIs (`workers`, `apis`) share the one dev server and the
 * one PostgreSQL; each API listens on its own port (`apiUrls`).
 * With `cluster`, the production shape instead (scripts/cluster.ts): the Temporal server on the
 * stack's PostgreSQL (fsync on, Temporal's databases beside the service's) in place of the dev
 * server, and nginx in front of the APIs; the load then goes through nginx (`loadUrls`).
 */
import { Client, Connection } from '@temporalio/client';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { devServerFleetArgs, devServerSearchAttributeArgs, devServerStorageArgs } from '../../connection.js';
import {
  clusterBinaries,
  MEMBERSHIP_PORT_LIMIT,
  nginxPath,
  setUpTemporalSchemas,
  spawnNginx,
  spawnTemporalServer,
  untilNamespaceServes,
  writeTemporalServerConfig,
  type TemporalServerPorts,
} from '../../scripts/cluster.js';
import { migrate } from '../../db/migrate.js';
import { temporalCliPath } from '../../scripts/toolchain.js';
import { freePort, freePortBelow } from '../../scripts/ports.js';
import { bundleInChildProcess } from '../../workflow-bundle.js';
import { buildService, distDir } from '../../scripts/build.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

export type Piece = 'temporal' | 'worker' | 'api' | 'nginx';

/** How long the dev server or an API may take to answer after its start (a busy machine is slow to start Node). */
const START_TIMEOUT_MS = 60_000;

export interface Exit {
  piece: Piece;
  pid: number;
  code: number | null;
  signal: string | null;
  /** We stopped or killed it on purpose. */
  expected: boolean;
}

export interface StackOptions {
  /** Run folder: logs, boxes, the dev server's database, the plugin cache. */
  dir: string;
  /**
   * The runtime each local box runs (JSON array form of WL_RUNTIME_COMMAND); null: none (the
   * variable is empty), so a box restart only records the launch and starts no process.
   */
  runtimeCommand: string[] | null;
  /** Worker processes, all polling the one task queue (default 1). */
  workers?: number;
  /** API processes, each on its own port (default 1). */
  apis?: number;
  /** Node flags for the worker's or the API's processes (e.g. --cpu-prof), before the script. */
  nodeArgs?: Partial<Record<'worker' | 'api', string[]>>;
  /** Extra environment for the worker and the API. */
  env?: Record<string, string>;
  /** Extra arguments for the dev server, after the project's (e.g. a dynamic config value to try). */
  devServerArgs?: string[];
  /** The production shape: the Temporal server on PostgreSQL and nginx in front of the APIs. */
  cluster?: boolean;
  /** The dev server's Web UI, at `uiUrl` (otherwise it runs headless). */
  webUi?: boolean;
  /**
   * A workflow bundle built beforehand (a file), which every worker start loads; without it the
   * stack bundles workflows/ once as it starts. Either way no worker start bundles again.
   */
  workflowBundle?: string;
  log: (line: string) => void;
}

/** One running process of the stack: `worker`, `worker-2`, `api`, `api-2`, `temporal`. */
export interface Instance {
  name: string;
  piece: Piece;
  pid: number;
}

export class Stack {
  readonly adminToken = 'chaos-admin-token-0123456789abcdef';
  readonly exits: Exit[] = [];
  databaseUrl = '';
  /** Where a client calls the API: the first API, or nginx in the cluster shape. */
  apiUrl = '';
  /** Every API process's own URL (its /metrics). */
  apiUrls: string[] = [];
  /** Where a load goes, spread over them: every API, or nginx alone in the cluster shape. */
  loadUrls: string[] = [];
  temporalAddress = '';
  /** The dev server's Web UI (StackOptions.webUi), or '' when it has none. */
  uiUrl = '';
  private pgPort = 0;
  private uiPort = 0;
  private apiPorts: number[] = [];
  private temporalPort = 0;
  private temporalMetricsPort = 0;
  private nginxPort = 0;
  private temporalPorts: TemporalServerPorts | undefined;
  /** By instance name; the first instance of a piece is named as the piece. */
  private readonly processes = new Map<string, { piece: Piece; child: ChildProcess }>();
  private readonly expectedExit = new Set<number>();
  /** One client for the run, however many callers ask at once (each connection costs every async call). */
  private client: Promise<Client> | undefined;
  /** Extra environment of the API only (see restartApi). */
  private apiEnv: Record<string, string> = {};
  /** Extra environment of the workers only (see restartWorker). */
  private workerEnv: Record<string, string> = {};
  private workflowBundle = '';

  constructor(readonly options: StackOptions) {
    mkdirSync(join(options.dir, 'logs'), { recursive: true });
  }

  get boxesDir(): string {
    return join(this.options.dir, 'boxes');
  }

  /** The dev server's Prometheus endpoint (e.g. `persistence_requests` by operation). */
  get temporalMetricsUrl(): string {
    return `http://127.0.0.1:${this.temporalMetricsPort}/metrics`;
  }

  /** The pid of the piece's first instance. */
  pid(piece: Piece): number | undefined {
    return this.processes.get(piece)?.child.pid;
  }

  /** Every process of the stack that is running, by instance. */
  instances(): Instance[] {
    const running: Instance[] = [];
    for (const [name, { piece, child }] of this.processes) {
      if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) continue;
      running.push({ name, piece, pid: child.pid });
    }
    return running;
  }

  /** The PostgreSQL server's main process (postmaster), or undefined when it is not running. */
  postgresPid(): number | undefined {
    try {
      const pid = Number(readFileSync(join(this.postgresDir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** Exits of processes nobody stopped on purpose. */
  crashes(): Exit[] {
    return this.exits.filter((exit) => !exit.expected);
  }

  async start(): Promise<void> {
    [this.pgPort, this.temporalPort, this.temporalMetricsPort] = await Promise.all([
      freePort(),
      freePort(),
      freePort(),
    ]);
    this.apiPorts = await Promise.all(Array.from({ length: Math.max(1, this.options.apis ?? 1) }, () => freePort()));
    this.temporalAddress = `127.0.0.1:${this.temporalPort}`;
    if (this.options.webUi === true) {
      this.uiPort = await freePort();
      this.uiUrl = `http://127.0.0.1:${this.uiPort}`;
    }
    this.apiUrls = this.apiPorts.map((port) => `http://127.0.0.1:${port}`);
    this.apiUrl = this.apiUrls[0] ?? '';
    this.loadUrls = this.apiUrls;
    if (this.options.cluster === true) {
      this.nginxPort = await freePort();
      this.apiUrl = `http://127.0.0.1:${this.nginxPort}`;
      this.loadUrls = [this.apiUrl];
    }
    // Bundled in a child process, and the service compiled, while the servers start.
    const bundling = this.options.workflowBundle ?? this.bundleWorkflows();
    [this.workflowBundle] = await Promise.all([bundling, this.startServers(), buildService()]);
    this.startWorker();
    await this.startApi();
    if (this.options.cluster === true) await this.startNginx();
  }

  /** PostgreSQL with the schema, and the dev server. */
  private async startServers(): Promise<void> {
    this.startPostgres();
    // The schema first, as a deploy's migration step would: the worker also migrates at start,
    // but the API may answer before a slow worker has, and find no tables.
    await migrate(this.databaseUrl);
    await this.startTemporal();
  }

  async stop(): Promise<void> {
    for (const piece of ['nginx', 'api', 'worker', 'temporal'] as const) await this.terminate(piece, 'SIGTERM');
    await this.client?.then((client) => client.connection.close()).catch(() => undefined);
    this.stopPostgres();
    // The run's cluster is of no use afterwards.
    rmSync(this.postgresDir, { recursive: true, force: true });
  }

  /** This run's PostgreSQL cluster: outside the run folder, which the postgres user cannot reach. */
  private get postgresDir(): string {
    return join('/var/tmp/workspace-lifecycle', `chaos-postgres-${this.pgPort}`);
  }

  /** A Temporal client for reading what the workflows recorded. */
  async temporal(): Promise<Client> {
    this.client ??= Connection.connect({ address: this.temporalAddress }).then(
      (connection) => new Client({ connection }),
    );
    // A failed connect is not kept: the next caller tries again.
    return this.client.catch((err: unknown) => {
      this.client = undefined;
      throw err;
    });
  }

  private async bundleWorkflows(): Promise<string> {
    const file = join(this.options.dir, 'workflow-bundle.js');
    writeFileSync(file, (await bundleInChildProcess()).code);
    return file;
  }

  // --- PostgreSQL -------------------------------------------------------------------------

  private postgres(args: string[]): string {
    return execFileSync('bash', [join(root, 'scripts/postgres.sh'), ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        WL_PG_DIR: this.postgresDir,
        WL_PG_PORT: String(this.pgPort),
        WL_PG_DATABASE: 'workspace_lifecycle_chaos',
        // The production shape syncs its commits, and holds the Temporal server's pools too.
        ...(this.options.cluster === true ? { WL_PG_FSYNC: 'on', WL_PG_MAX_CONNECTIONS: '300' } : {}),
      },
    });
  }

  startPostgres(): void {
    const output = this.postgres([]);
    const url = /^export DATABASE_URL=(\S+)$/m.exec(output)?.[1];
    if (url === undefined) throw new Error(`scripts/postgres.sh printed no DATABASE_URL:\n${output}`);
    this.databaseUrl = url;
  }

  /** A fast shutdown: the server terminates every connection, as in a restart. */
  stopPostgres(): void {
    this.postgres(['stop']);
  }

  // --- processes --------------------------------------------------------------------------

  async startTemporal(): Promise<void> {
    if (this.options.cluster === true) return this.startTemporalServer();
    const cli = temporalCliPath();
    if (cli === undefined) throw new Error('Temporal CLI not found: run `npm run toolchain`');
    const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(this.temporalPort)];
    args.push(...(this.uiPort === 0 ? ['--headless'] : ['--ui-port', String(this.uiPort)]));
    args.push('--metrics-port', String(this.temporalMetricsPort));
    const dbFile = join(this.options.dir, 'temporal.db');
    args.push(...devServerStorageArgs(dbFile), ...devServerFleetArgs(dbFile), '--log-level', 'error');
    this.spawn('temporal', 0, cli, [...args, ...devServerSearchAttributeArgs(), ...(this.options.devServerArgs ?? [])]);
    await (await untilTemporalAnswers(this.temporalAddress, Date.now() + START_TIMEOUT_MS)).close();
  }

  /**
   * The Temporal server on the stack's PostgreSQL: its databases and schemas set up on the first
   * start, the same configuration (ports, databases) on every start after, as a restart would.
   */
  private async startTemporalServer(): Promise<void> {
    const binaries = clusterBinaries();
    const pg = { host: '127.0.0.1', port: this.pgPort, user: 'postgres' };
    if (this.temporalPorts === undefined) {
      setUpTemporalSchemas(binaries, pg);
      const low = (): Promise<number> => freePortBelow(MEMBERSHIP_PORT_LIMIT);
      this.temporalPorts = {
        frontend: this.temporalPort,
        frontendHttp: await freePort(),
        history: await freePort(),
        matching: await freePort(),
        worker: await freePort(),
        frontendMembership: await low(),
        historyMembership: await low(),
        matchingMembership: await low(),
        workerMembership: await low(),
        metrics: this.temporalMetricsPort,
      };
    }
    const file = writeTemporalServerConfig(join(this.options.dir, 'temporal'), {
      ports: this.temporalPorts,
      pg,
      logLevel: 'error',
    });
    this.track('temporal', 0, spawnTemporalServer(binaries, file));
    await untilNamespaceServes(this.temporalAddress, 'default', Date.now() + START_TIMEOUT_MS);
  }

  /** nginx on `apiUrl`, in front of every API. */
  async startNginx(): Promise<void> {
    const child = spawnNginx(nginxPath(), join(this.options.dir, 'nginx'), {
      listen: `127.0.0.1:${this.nginxPort}`,
      upstreams: this.apiPorts.map((port) => `127.0.0.1:${port}`),
    });
    this.track('nginx', 0, child);
    await untilApiAnswers(this.apiUrl, Date.now() + START_TIMEOUT_MS);
  }

  /** Starts every worker process (`workers`). */
  startWorker(): void {
    for (let i = 0; i < Math.max(1, this.options.workers ?? 1); i++)
      this.spawn('worker', i, 'bash', this.workerCommand());
  }

  /** `bash` arguments of a worker: compiled, on jemalloc where it is installed, as `npm run worker` runs it (exec keeps the pid). */
  private workerCommand(): string[] {
    const args = [...(this.options.nodeArgs?.worker ?? []), join(distDir, 'worker.js')];
    return [join(root, 'scripts', 'jemalloc.sh'), process.execPath, ...args];
  }

  private apiArgs(): string[] {
    return [...(this.options.nodeArgs?.api ?? []), join(distDir, 'api', 'main.js')];
  }

  /** Starts every API process (`apis`), each on its port, and waits until each answers. */
  async startApi(): Promise<void> {
    const args = this.apiArgs();
    this.apiPorts.forEach((port, i) => this.spawn('api', i, process.execPath, args, { WL_API_PORT: String(port) }));
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (const url of this.apiUrls) await untilApiAnswers(url, deadline);
  }

  /** Stops the API and starts it again with `env` on top of the stack's environment. */
  async restartApi(env: Record<string, string>): Promise<void> {
    await this.terminate('api', 'SIGTERM');
    this.apiEnv = env;
    await this.startApi();
  }

  /**
   * Stops every worker and starts them again with `env` on top of the stack's environment (e.g.
   * the fleet liveness controller's settings, which the last worker started sets).
   */
  async restartWorker(env: Record<string, string>): Promise<void> {
    await this.terminate('worker', 'SIGTERM');
    this.workerEnv = env;
    this.startWorker();
  }

  /** SIGKILL: no drain, no cleanup, as a crash or an OOM kill. */
  async kill(piece: Piece): Promise<void> {
    await this.terminate(piece, 'SIGKILL');
  }

  /** SIGKILL to one instance (`worker-2`, `api-2`), the others left running. */
  async killInstance(name: string): Promise<void> {
    const running = this.processes.get(name);
    if (running === undefined) throw new Error(`no instance ${name}`);
    const { child } = running;
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    this.expectedExit.add(child.pid);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  /** Starts instance `index` (0-based) of the worker or the API again, as its first start did. */
  async startInstance(piece: 'worker' | 'api', index: number): Promise<void> {
    if (piece === 'worker') {
      this.spawn('worker', index, 'bash', this.workerCommand());
      return;
    }
    const port = this.apiPorts[index];
    if (port === undefined) throw new Error(`no API ${index + 1}`);
    this.spawn('api', index, process.execPath, this.apiArgs(), { WL_API_PORT: String(port) });
    await untilApiAnswers(`http://127.0.0.1:${port}`, Date.now() + START_TIMEOUT_MS);
  }

  /** Stops every instance of the piece, all at once. */
  private async terminate(piece: Piece, signal: NodeJS.Signals): Promise<void> {
    const stopping: Promise<unknown>[] = [];
    for (const { piece: its, child } of this.processes.values()) {
      if (its !== piece) continue;
      if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) continue;
      this.expectedExit.add(child.pid);
      stopping.push(new Promise((resolve) => child.once('exit', resolve)));
      child.kill(signal);
    }
    await Promise.all(stopping);
  }

  /** Starts instance `index` of the piece (named `worker`, `worker-2`, ...). */
  private spawn(piece: Piece, index: number, program: string, args: string[], env: Record<string, string> = {}): void {
    const child = spawn(program, args, {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...this.environment(),
        ...(piece === 'api' ? this.apiEnv : {}),
        ...(piece === 'worker' ? this.workerEnv : {}),
        ...env,
      },
    });
    this.track(piece, index, child);
  }

  /** Logs and watches a process of the stack, as instance `index` of the piece. */
  private track(piece: Piece, index: number, child: ChildProcess): void {
    const name = index === 0 ? piece : `${piece}-${index + 1}`;
    const log = createWriteStream(join(this.options.dir, 'logs', `${name}.log`), { flags: 'a' });
    if (child.stdout === null || child.stderr === null) throw new Error(`${name}: its output is not piped`);
    child.stdout.pipe(log);
    child.stderr.pipe(log);
    const pid = child.pid ?? 0;
    child.once('exit', (code, signal) => {
      const expected = this.expectedExit.has(pid);
      this.exits.push({ piece, pid, code, signal, expected });
      if (!expected) this.options.log(`!! ${name} (pid ${pid}) exited on its own: ${signal ?? `code ${code}`}`);
    });
    this.processes.set(name, { piece, child });
  }

  private environment(): NodeJS.ProcessEnv {
    return {
      ...process.env,
      TEMPORAL_ADDRESS: this.temporalAddress,
      TEMPORAL_NAMESPACE: 'default',
      DATABASE_URL: this.databaseUrl,
      WL_DATA_DIR: this.options.dir,
      WL_BOXES_DIR: this.boxesDir,
      WL_RUNTIME_COMMAND: this.options.runtimeCommand === null ? '' : JSON.stringify(this.options.runtimeCommand),
      WL_ADMIN_TOKEN: this.adminToken,
      WL_WORKFLOW_BUNDLE: this.workflowBundle,
      WL_API_PORT: String(this.apiPorts[0] ?? 0),
      // The runtimes the worker restarts find the (first) API through it.
      WL_API_URL: this.apiUrl,
      WL_ALLOW_LOOPBACK_URLS: 'true',
      // The plugin repositories of the run (chaos/rows.ts).
      WL_PLUGIN_SOURCE_FILE_ROOTS: join(this.options.dir, 'repos'),
      LOG_LEVEL: 'warn',
      ...this.options.env,
    };
  }
}

/** A connection to the Temporal server at `address` once it answers; throws at `deadline` (ms since the epoch). */
export async function untilTemporalAnswers(address: string, deadline: number): Promise<Connection> {
  for (;;) {
    try {
      const connection = await Connection.connect({ address, connectTimeout: 1_000 });
      await connection.workflowService.getSystemInfo({});
      return connection;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`the Temporal server at ${address} did not come up: ${String(err)}`);
      await sleep(200);
    }
  }
}

/**
 * Waits until the API at `url` answers `/healthz`; throws at `deadline` (ms since the epoch), or
 * at once when `exited` says its process is gone.
 */
export async function untilApiAnswers(
  url: string,
  deadline: number,
  exited: () => boolean = () => false,
): Promise<void> {
  for (;;) {
    if (exited()) throw new Error(`the API at ${url} exited before it answered`);
    const up = await fetch(`${url}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (up) return;
    if (Date.now() > deadline) throw new Error(`the API at ${url} did not come up in time`);
    await sleep(50);
  }
}
