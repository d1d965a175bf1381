/**
 * The production shape's shared pieces, for `npm run start:cluster` (scripts/start-cluster.ts)
 * and the harness's cluster stack (bench/harness/stack.ts): a Temporal server (the real one, not
 * the dev server) on PostgreSQL with its persistence and visibility in databases of their own,
 * the Web UI server pointed at it, and nginx in front of the API processes. The binaries come
 * from `scripts/toolchain.sh --cluster`, nginx from scripts/nginx.sh. Each piece's configuration
 * file is written here, from the ports and folders it is given.
 */
import { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time.js';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { ensureSearchAttributes } from '../connection.js';
import { temporalCliVersion, toolchainDir } from './toolchain.js';

const scripts = fileURLToPath(new URL('.', import.meta.url));

/** The databases of the Temporal server: its state, and its visibility (listing and search). */
export const TEMPORAL_DATABASES = { persistence: 'temporal', visibility: 'temporal_visibility' } as const;

/**
 * History shards of a new cluster. Fixed for a cluster's life (changing it means a new cluster),
 * and the unit of the history service's parallelism: each shard is owned by one history host at
 * a time. Four fit one box; a production cluster sizes it for the hosts it may grow to
 * (docs/deploy.md).
 */
export const LOCAL_HISTORY_SHARDS = 4;

/** How long a closed workflow's history is kept on the local cluster's namespace. */
const LOCAL_RETENTION_MS = 3 * 24 * 3600 * 1000;

export interface ClusterBinaries {
  temporalServer: string;
  sqlTool: string;
  /** The server module's schema folder (postgresql/v12/{temporal,visibility}/versioned). */
  schemaDir: string;
  uiServer: string;
}

/**
 * The binaries `scripts/toolchain.sh --cluster` built (it prints where with --print-env; the
 * server's version is the one the CLI pins, so the folder is found by its name's prefix).
 * Throws, saying what to run, when they are missing.
 */
export function clusterBinaries(env: NodeJS.ProcessEnv = process.env): ClusterBinaries {
  const cache = toolchainDir();
  const newest = (prefix: string): string | undefined => {
    if (!existsSync(cache)) return undefined;
    const found = readdirSync(cache)
      .filter((name) => name.startsWith(prefix))
      .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
    const last = found.at(-1);
    return last === undefined ? undefined : join(cache, last);
  };
  const serverDir = env['WL_TEMPORAL_SERVER_DIR'] ?? newest('temporal-server-v');
  const uiServer = env['WL_TEMPORAL_UI_SERVER_PATH'] ?? join(newest('temporal-ui-server-v') ?? '', 'ui-server');
  const binaries: ClusterBinaries = {
    temporalServer: join(serverDir ?? '', 'temporal-server'),
    sqlTool: join(serverDir ?? '', 'temporal-sql-tool'),
    schemaDir: join(serverDir ?? '', 'schema'),
    uiServer,
  };
  for (const path of [binaries.temporalServer, binaries.sqlTool, binaries.schemaDir, binaries.uiServer])
    if (serverDir === undefined || !existsSync(path))
      throw new Error(
        `the Temporal server, its SQL tool or the Web UI server is missing (${path}): ` +
          `run \`bash scripts/toolchain.sh --cluster\` (it builds them on CLI ${temporalCliVersion()}'s versions)`,
      );
  return binaries;
}

/** The nginx binary (installed by scripts/nginx.sh when missing). */
export function nginxPath(): string {
  return execFileSync('bash', [join(scripts, 'nginx.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
}

export interface PostgresAddress {
  host: string;
  port: number;
  user: string;
}

/**
 * Creates the Temporal server's two databases on `pg` when missing and brings their schemas to
 * the server's version with temporal-sql-tool (setup at 0.0 on a new database, then every
 * versioned step; a second run applies nothing). Returns what it did, for the log.
 */
export function setUpTemporalSchemas(binaries: ClusterBinaries, pg: PostgresAddress): string[] {
  const done: string[] = [];
  const tool = (database: string, args: string[]): string =>
    execFileSync(
      binaries.sqlTool,
      [
        '--plugin',
        'postgres12',
        '--ep',
        pg.host,
        '--port',
        String(pg.port),
        '--user',
        pg.user,
        '--database',
        database,
        ...args,
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
  for (const [kind, database] of Object.entries(TEMPORAL_DATABASES)) {
    const folder = kind === 'persistence' ? 'temporal' : 'visibility';
    const exists = psql(pg, 'postgres', `SELECT 1 FROM pg_database WHERE datname = '${database}'`) === '1';
    if (!exists) {
      tool(database, ['create-database']);
      done.push(`created database ${database}`);
    }
    const versioned = psql(pg, database, "SELECT to_regclass('public.schema_version') IS NOT NULL") === 't';
    if (!versioned) {
      tool(database, ['setup-schema', '--version', '0.0']);
      done.push(`set up the ${database} schema`);
    }
    const before = psql(pg, database, 'SELECT curr_version FROM schema_version');
    tool(database, [
      'update-schema',
      '--schema-dir',
      join(binaries.schemaDir, 'postgresql', 'v12', folder, 'versioned'),
    ]);
    const after = psql(pg, database, 'SELECT curr_version FROM schema_version');
    if (after !== before) done.push(`${database} schema ${before || '0.0'} -> ${after}`);
  }
  return done;
}

function psql(pg: PostgresAddress, database: string, sql: string): string {
  return execFileSync('psql', ['-h', pg.host, '-p', String(pg.port), '-U', pg.user, '-d', database, '-tAc', sql], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  }).trim();
}

/** Creates `database` on `pg` when missing (the service's own, beside Temporal's). */
export function ensureDatabase(pg: PostgresAddress, database: string): string {
  if (psql(pg, 'postgres', `SELECT 1 FROM pg_database WHERE datname = '${database}'`) !== '1')
    psql(pg, 'postgres', `CREATE DATABASE ${database}`);
  return `postgres://${pg.user}@${pg.host}:${pg.port}/${database}`;
}

/** The server stores its services' membership ports as PostgreSQL smallints: each must be below this. */
export const MEMBERSHIP_PORT_LIMIT = 32_768;

export interface TemporalServerPorts {
  /** The frontend's gRPC port: the address workers and clients use. */
  frontend: number;
  frontendHttp: number;
  history: number;
  matching: number;
  worker: number;
  /** Membership (ringpop) of each service. */
  frontendMembership: number;
  historyMembership: number;
  matchingMembership: number;
  workerMembership: number;
  /** Prometheus metrics of the server. */
  metrics: number;
}

/**
 * The Temporal server's configuration file for one process running all four services on
 * loopback, persistence and visibility on PostgreSQL. Connection pools are per service and per
 * store: 4 services x (10 + 4) connections at most, well inside the cluster's limit beside the
 * workers' and APIs' own pools.
 */
export function temporalServerConfig(o: {
  ports: TemporalServerPorts;
  pg: PostgresAddress;
  dynamicConfigFile: string;
  logLevel: string;
}): string {
  const store = (database: string, maxConns: number) => ({
    sql: {
      pluginName: 'postgres12',
      databaseName: database,
      connectAddr: `${o.pg.host}:${o.pg.port}`,
      connectProtocol: 'tcp',
      user: o.pg.user,
      password: '',
      maxConns,
      maxIdleConns: maxConns,
      maxConnLifetime: '1h',
    },
  });
  const service = (grpcPort: number, membershipPort: number, extra: Record<string, unknown> = {}) => ({
    rpc: { grpcPort, membershipPort, bindOnIP: '127.0.0.1', ...extra },
  });
  const { ports } = o;
  return stringify({
    log: { stdout: true, level: o.logLevel },
    persistence: {
      defaultStore: 'default',
      visibilityStore: 'visibility',
      numHistoryShards: LOCAL_HISTORY_SHARDS,
      datastores: {
        default: store(TEMPORAL_DATABASES.persistence, 10),
        visibility: store(TEMPORAL_DATABASES.visibility, 4),
      },
    },
    global: {
      membership: { maxJoinDuration: '30s', broadcastAddress: '127.0.0.1' },
      metrics: {
        prometheus: { framework: 'tally', timerType: 'histogram', listenAddress: `127.0.0.1:${ports.metrics}` },
      },
    },
    services: {
      frontend: service(ports.frontend, ports.frontendMembership, { httpPort: ports.frontendHttp }),
      history: service(ports.history, ports.historyMembership),
      matching: service(ports.matching, ports.matchingMembership),
      worker: service(ports.worker, ports.workerMembership),
    },
    clusterMetadata: {
      enableGlobalNamespace: false,
      failoverVersionIncrement: 10,
      masterClusterName: 'active',
      currentClusterName: 'active',
      clusterInformation: {
        active: {
          enabled: true,
          initialFailoverVersion: 1,
          rpcName: 'frontend',
          rpcAddress: `127.0.0.1:${ports.frontend}`,
        },
      },
    },
    dcRedirectionPolicy: { policy: 'noop' },
    dynamicConfigClient: { filepath: o.dynamicConfigFile, pollInterval: '10s' },
  });
}

/**
 * The cluster's dynamic configuration. Empty of tuning on purpose: the shape is measured as a
 * platform team would first run it, with the server's defaults (four task queue partitions, the
 * default history cache); docs/deploy.md names the settings a fleet may want.
 */
export const CLUSTER_DYNAMIC_CONFIG =
  '# Temporal dynamic configuration (docs/deploy.md names the settings a fleet may want).\n{}\n';

/** Writes the server's configuration and dynamic configuration into `dir`; returns the config file. */
export function writeTemporalServerConfig(
  dir: string,
  o: { ports: TemporalServerPorts; pg: PostgresAddress; logLevel: string },
): string {
  mkdirSync(dir, { recursive: true });
  const dynamicConfigFile = join(dir, 'dynamicconfig.yaml');
  if (!existsSync(dynamicConfigFile)) writeFileSync(dynamicConfigFile, CLUSTER_DYNAMIC_CONFIG);
  const file = join(dir, 'temporal-server.yaml');
  writeFileSync(file, temporalServerConfig({ ...o, dynamicConfigFile }));
  return file;
}

/** Starts the Temporal server (all four services in one process) on `configFile`. */
export function spawnTemporalServer(binaries: ClusterBinaries, configFile: string): ChildProcess {
  return spawn(binaries.temporalServer, ['--config-file', configFile, '--allow-no-auth', 'start'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/**
 * Waits until the server at `address` answers and `namespace` is registered on it with the
 * service's search attributes (a cluster, unlike the dev server, starts with neither, and an API
 * that starts a workflow before a worker registered them would fail), registering what is
 * missing. Throws at `deadline` (ms since the epoch).
 */
export async function untilNamespaceServes(address: string, namespace: string, deadline: number): Promise<void> {
  const ALREADY_EXISTS = 6;
  for (;;) {
    try {
      const connection = await Connection.connect({ address, connectTimeout: 1_000 });
      try {
        await connection.workflowService
          .registerNamespace({ namespace, workflowExecutionRetentionPeriod: msToTs(LOCAL_RETENTION_MS) })
          .catch((err: unknown) => {
            if ((err as { code?: unknown }).code !== ALREADY_EXISTS) throw err;
          });
        // A namespace just registered is served once the frontend's registry has read it.
        await connection.workflowService.listWorkflowExecutions({ namespace, pageSize: 1 });
        await ensureSearchAttributes(connection.operatorService, namespace);
        return;
      } finally {
        await connection.close();
      }
    } catch (err) {
      if (Date.now() > deadline)
        throw new Error(`the Temporal server at ${address} did not serve namespace ${namespace}: ${String(err)}`);
      await sleep(500);
    }
  }
}

/** Writes the Web UI server's configuration (its config folder, environment `cluster`) and starts it. */
export function spawnUiServer(
  binaries: ClusterBinaries,
  dir: string,
  o: { temporalAddress: string; port: number },
): ChildProcess {
  const configDir = join(dir, 'ui-config');
  mkdirSync(configDir, { recursive: true });
  writeFileSync(
    join(configDir, 'cluster.yaml'),
    stringify({
      temporalGrpcAddress: o.temporalAddress,
      host: '127.0.0.1',
      port: o.port,
      enableUi: true,
      defaultNamespace: 'default',
      cors: { cookieInsecure: true, allowOrigins: [`http://127.0.0.1:${o.port}`] },
      auth: { enabled: false },
    }),
  );
  return spawn(binaries.uiServer, ['--root', dir, '--config', 'ui-config', '--env', 'cluster', 'start'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/**
 * nginx in front of the APIs: one address, round robin over `upstreams`. A request whose
 * connection to an API fails (the API is down: refused, or no answer to the connect within a
 * second) goes to the next API, so a runtime sees no error for an API that is gone; a request
 * already sent to an API that then dies is not sent again (nginx never resends a POST it has
 * sent), and the runtime gets a 502, which it retries. Keepalive connections to the APIs; no
 * buffering, so a streamed answer (server-sent events) reaches the client as it is written.
 */
export function nginxConfig(o: { dir: string; listen: string; upstreams: string[]; runAsRoot: boolean }): string {
  const temp = (name: string): string => join(o.dir, 'temp', name);
  return [
    'daemon off;',
    ...(o.runAsRoot ? ['user root;'] : []),
    'worker_processes 1;',
    `pid ${join(o.dir, 'nginx.pid')};`,
    'error_log stderr warn;',
    'events { worker_connections 4096; }',
    'http {',
    '  access_log off;',
    `  client_body_temp_path ${temp('client_body')};`,
    `  proxy_temp_path ${temp('proxy')};`,
    `  fastcgi_temp_path ${temp('fastcgi')};`,
    `  uwsgi_temp_path ${temp('uwsgi')};`,
    `  scgi_temp_path ${temp('scgi')};`,
    '  upstream workspace_lifecycle_api {',
    ...o.upstreams.map((address) => `    server ${address} max_fails=1 fail_timeout=2s;`),
    '    keepalive 64;',
    '  }',
    '  server {',
    `    listen ${o.listen};`,
    '    client_max_body_size 1m;',
    '    location / {',
    '      proxy_pass http://workspace_lifecycle_api;',
    '      proxy_http_version 1.1;',
    '      proxy_set_header Connection "";',
    '      proxy_set_header Host $http_host;',
    '      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    '      proxy_next_upstream error timeout;',
    '      proxy_next_upstream_tries 2;',
    '      proxy_connect_timeout 1s;',
    '      proxy_read_timeout 120s;',
    '      proxy_buffering off;',
    '    }',
    '  }',
    '}',
    '',
  ].join('\n');
}

/** Writes nginx's configuration into `dir` and starts it in the foreground (its own process). */
export function spawnNginx(nginx: string, dir: string, o: { listen: string; upstreams: string[] }): ChildProcess {
  for (const name of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'])
    mkdirSync(join(dir, 'temp', name), { recursive: true });
  const file = join(dir, 'nginx.conf');
  const runAsRoot = process.getuid?.() === 0;
  writeFileSync(file, nginxConfig({ dir, ...o, runAsRoot }));
  return spawn(nginx, ['-p', dir, '-c', file, '-e', 'stderr'], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * The PostgreSQL cluster of `npm run start:cluster`: its own (scripts/postgres.sh), apart from
 * the tests' shared one, on WL_CLUSTER_PG_PORT (55433), with fsync on and room for the Temporal
 * server's pools beside the workers' and APIs'.
 */
function clusterPostgresEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return {
    ...env,
    WL_PG_PORT: env['WL_CLUSTER_PG_PORT'] ?? '55433',
    WL_PG_DIR: env['WL_CLUSTER_PG_DIR'] ?? '/var/tmp/workspace-lifecycle/postgres-cluster',
    WL_PG_DATABASE: 'postgres',
    WL_PG_FSYNC: 'on',
    WL_PG_MAX_CONNECTIONS: '300',
  };
}

/** Starts (or reuses) the cluster's PostgreSQL and returns where it listens. */
export function clusterPostgres(env: NodeJS.ProcessEnv = process.env): PostgresAddress {
  const pgEnv = clusterPostgresEnv(env);
  execFileSync('bash', [join(scripts, 'postgres.sh')], { stdio: ['ignore', 'ignore', 'inherit'], env: pgEnv });
  return { host: '127.0.0.1', port: Number(pgEnv['WL_PG_PORT']), user: 'postgres' };
}

/** Stops the cluster's PostgreSQL (fast shutdown). */
export function stopClusterPostgres(env: NodeJS.ProcessEnv = process.env): void {
  execFileSync('bash', [join(scripts, 'postgres.sh'), 'stop'], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: clusterPostgresEnv(env),
  });
}
