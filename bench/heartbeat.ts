/**
 * `npm run bench:heartbeat`: the API's heartbeat route against its floor, in one process tree
 * and alternating rounds (floor, API, floor, API, ...) on the same PostgreSQL.
 *
 * - The floor (bench/heartbeat-floor.ts): the simplest durable heartbeat a competent engineer
 *   would write, Fastify and `pg`, one `UPDATE ... WHERE id = $1 AND token_hash = $2` per
 *   heartbeat, on a table of its own.
 * - The API: the real pieces (bench/harness/stack.ts: PostgreSQL, a Temporal dev server, the
 *   worker and the API, each its own process), its workspaces created and registered through
 *   the API and online, each heartbeat with its workspace's own token into the real ledger.
 *
 * Both get the same workspaces and tokens, the same load generator (autocannon in this process,
 * at fixed concurrency, the workspaces in turn) and the same round length. While the API's
 * rounds run, the dev server's count of signals received is read every `--sample-every` seconds:
 * the seconds in which it received signals (heartbeats the workflows wanted) are reported apart
 * from the plain ones. Prints req/s (200 answers) and p50/p99 per round and per side, the
 * ratio API/floor, and each process's CPU (the load generator's too).
 *
 *   npm run bench:heartbeat [-- --workspaces 2000 --connections 64 --round 120 --pairs 2]
 *                           [--warmup 10] [--sample-every 2] [--env KEY=VALUE ...] [--quick]
 *
 * `--env` (repeatable) sets a variable for the worker and the API, e.g. a setting of the
 * heartbeat route to try; a variable the code does not read changes nothing. `--quick`: a few
 * workspaces and seconds-long rounds, which proves the bench runs (its figures mean nothing).
 */
import autocannon from 'autocannon';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { idleHeartbeat } from '../workflows/payloads.js';
import { freePort } from '../scripts/ports.js';
import { notOnline, workersPolling } from './fleet-inspect.js';
import { cpuText } from './fleet-report.js';
import { log, register, targets } from './fleet-run.js';
import { createFloorTable, fillFloorTable } from './heartbeat-floor.js';
import { HeartbeatLoad, createWorkspaces, statusKey, type Runtime } from './harness/load.js';
import { signalsReceived } from './harness/metrics.js';
import { cpuBetween, cpuTicks, type CpuUse, type Target } from './harness/processes.js';
import { Stack, untilApiAnswers } from './harness/stack.js';
import { countBy, countsText, percentile, round } from './harness/stats.js';
import { positive } from './harness/options.js';

/**
 * The rounds start once every workspace is online, or once the projection's statuses have not
 * changed for this long: a dev server may leave new workflows' first tasks in its backlog for
 * many minutes (docs/performance.md, the cold start), and the route is measured all the same.
 */
const SETTLE_STALL_MS = 2 * 60_000;

export interface HeartbeatBenchOptions {
  workspaces: number;
  connections: number;
  /** Seconds per round. */
  roundS: number;
  /** Rounds of each side: floor, API, floor, API, ... */
  pairs: number;
  /** Seconds of each side before the first round, not measured. */
  warmupS: number;
  /** How often, in seconds, the dev server's signal count is read during a round. */
  sampleEveryS: number;
  /** Extra environment of the worker and the API. */
  env: Record<string, string>;
  /** A workflow bundle built beforehand (the stack bundles one otherwise). */
  workflowBundle?: string;
  keep: boolean;
  /** Write the API's CPU profile (`node --cpu-prof`) into this folder when it stops. */
  profileDir?: string;
}

/** A few workspaces and seconds-long rounds: proves the bench runs. */
export const quickOptions: Omit<HeartbeatBenchOptions, 'env' | 'keep'> = {
  workspaces: 20,
  connections: 8,
  roundS: 1,
  pairs: 1,
  warmupS: 1,
  sampleEveryS: 1,
};

export type Side = 'floor' | 'api';

/** One stretch of a round between two readings of the dev server's signal count. */
interface Bucket {
  seconds: number;
  ok: number;
  latencies: number[];
  /** Signals the dev server received meanwhile. */
  signals: number;
}

export interface RoundFigures {
  side: Side;
  seconds: number;
  /** 200 answers. */
  ok: number;
  /** Answers other than 200, by status. */
  non200: Map<string, number>;
  /** Requests that got no answer (refused, reset, timed out). */
  errors: number;
  /** Latencies of the 200 answers, ms. */
  latencies: number[];
  buckets: Bucket[];
  signals: number;
  cpu: CpuUse[];
}

/** Throughput and latency of a set of 200 answers. */
export interface Figures {
  seconds: number;
  perSecond: number;
  p50: number;
  p99: number;
}

export interface HeartbeatBenchResult {
  /** Workspaces created (and beaten); fewer than asked when creates failed. */
  workspaces: number;
  /** The projection's statuses of the workspaces as the rounds started. */
  statusesAtStart: string;
  rounds: RoundFigures[];
  floor: Figures;
  api: Figures;
  /** The API's seconds in which the dev server received signals (heartbeat forwards), and the rest. */
  apiForwarding: Figures;
  apiPlain: Figures;
}

function figures(parts: { seconds: number; ok: number; latencies: number[] }[]): Figures {
  const seconds = parts.reduce((sum, p) => sum + p.seconds, 0);
  const ok = parts.reduce((sum, p) => sum + p.ok, 0);
  const latencies = parts.flatMap((p) => p.latencies);
  return {
    seconds,
    perSecond: seconds > 0 ? ok / seconds : NaN,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
  };
}

/** Each workspace's heartbeat request, built once: the load generator sends them in turn. */
function heartbeatRequests(runtimes: readonly Runtime[]): { headers: Record<string, string>; body: string }[] {
  return runtimes.map((r) => ({
    headers: { 'content-type': 'application/json', authorization: `Bearer ${r.token}` },
    body: JSON.stringify(idleHeartbeat(r.id, 1)),
  }));
}

/**
 * One round against `url`: autocannon for `seconds` at `connections`, every answer recorded;
 * the dev server's signal count read every `sampleEveryS` into buckets.
 */
async function runRound(
  side: Side,
  url: string,
  requests: ReturnType<typeof heartbeatRequests>,
  o: HeartbeatBenchOptions,
  seconds: number,
  metricsUrl: string,
  measured: () => Target[],
): Promise<RoundFigures> {
  const non200 = new Map<string, number>();
  let bucket: Bucket = { seconds: 0, ok: 0, latencies: [], signals: 0 };
  const buckets: Bucket[] = [];
  let next = 0;
  let lastSignals = await signalsReceived(metricsUrl);
  const cpuBefore = cpuTicks(measured());
  let lastAt = performance.now();
  let sampling = Promise.resolve();
  const closeBucket = async (): Promise<void> => {
    const closing = bucket;
    bucket = { seconds: 0, ok: 0, latencies: [], signals: 0 };
    const now = performance.now();
    const signals = await signalsReceived(metricsUrl);
    closing.seconds = (now - lastAt) / 1000;
    closing.signals = signals - lastSignals;
    lastAt = now;
    lastSignals = signals;
    buckets.push(closing);
  };
  const sampler = setInterval(() => {
    sampling = sampling.then(closeBucket);
  }, o.sampleEveryS * 1000);
  const errors = await new Promise<number>((resolve, reject) => {
    const instance = autocannon(
      {
        url: `${url}/registry/heartbeat`,
        connections: o.connections,
        duration: seconds,
        requests: [
          {
            method: 'POST',
            setupRequest: (request) => ({ ...request, ...requests[next++ % requests.length] }),
          },
        ],
      },
      (err: unknown, result) =>
        err
          ? reject(err instanceof Error ? err : new Error(`autocannon: ${JSON.stringify(err)}`))
          : resolve(result.errors),
    );
    instance.on('response', (_client, status, _bytes, ms) => {
      if (status === 200) {
        bucket.ok++;
        bucket.latencies.push(ms);
      } else non200.set(String(status), (non200.get(String(status)) ?? 0) + 1);
    });
  });
  clearInterval(sampler);
  await sampling;
  await closeBucket();
  const cpu = cpuBetween(cpuBefore, cpuTicks(measured()));
  return {
    side,
    seconds: buckets.reduce((sum, b) => sum + b.seconds, 0),
    ok: buckets.reduce((sum, b) => sum + b.ok, 0),
    non200,
    errors,
    latencies: buckets.flatMap((b) => b.latencies),
    buckets,
    signals: buckets.reduce((sum, b) => sum + b.signals, 0),
    cpu,
  };
}

/** Starts the floor's server process on a free port; resolves once it answers. */
async function startFloor(databaseUrl: string, dir: string): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', fileURLToPath(new URL('heartbeat-floor.ts', import.meta.url))],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, DATABASE_URL: databaseUrl, WL_FLOOR_PORT: String(port) },
    },
  );
  const logFile = createWriteStream(join(dir, 'logs', 'floor.log'), { flags: 'a' });
  child.stdout.pipe(logFile);
  child.stderr.pipe(logFile);
  const url = `http://127.0.0.1:${port}`;
  await untilApiAnswers(url, Date.now() + 60_000, () => child.exitCode !== null);
  return { url, child };
}

/**
 * The workspaces, created and registered through the API, every one online; the floor's table
 * holds the same ids and tokens. Their runtimes beat every 30 s meanwhile, as runtimes do, so
 * none goes offline while the fleet settles.
 */
async function setUp(
  stack: Stack,
  o: HeartbeatBenchOptions,
  run: string,
): Promise<{ runtimes: Runtime[]; statuses: string }> {
  const { runtimes, failures } = await createWorkspaces({
    apiUrls: stack.apiUrls,
    adminToken: stack.adminToken,
    ids: Array.from({ length: o.workspaces }, (_, i) => `${run}${i}`),
    concurrency: 32,
    retryOn: [429, 503, 0],
  });
  // A create whose answer was lost (a timeout, an overloaded box) and that succeeded is 409 on
  // its retry, without the token: the bench goes on with the workspaces it holds tokens of.
  if (failures.length > 0)
    log(`!! ${failures.length} creates failed (${countsText(countBy(failures, statusKey))}); going on with the others`);
  if (runtimes.length === 0) throw new Error('no workspace was created');
  log(`created ${runtimes.length} workspaces`);
  const { registered } = await register(stack, runtimes, 32);
  if (registered < runtimes.length) throw new Error(`only ${registered} of ${runtimes.length} registers answered 200`);
  const load = new HeartbeatLoad({
    apiUrls: stack.apiUrls,
    runtimes,
    rate: runtimes.length / 30,
    maxInFlight: 64,
    pace: 'runtime',
  });
  load.start();
  let state = { count: 0, statuses: '' };
  try {
    const started = Date.now();
    let changedAt = started;
    let said = '';
    for (;;) {
      state = await notOnline(stack.databaseUrl, run);
      if (state.count === 0) {
        log(`every workspace online, ${round((Date.now() - started) / 1000)} s after the last register`);
        break;
      }
      if (state.statuses !== said) {
        log(`settle: ${state.statuses}`);
        changedAt = Date.now();
      }
      said = state.statuses;
      if (Date.now() - changedAt > SETTLE_STALL_MS) {
        log(`settle: !! no change in ${SETTLE_STALL_MS / 1000} s; the rounds start with ${state.count} not online`);
        break;
      }
      await sleep(2_000);
    }
  } finally {
    await load.stop();
  }
  const pool = new pg.Pool({ connectionString: stack.databaseUrl, max: 1 });
  try {
    await createFloorTable(pool);
    await fillFloorTable(pool, runtimes);
  } finally {
    await pool.end();
  }
  return { runtimes, statuses: state.statuses };
}

/** Stops what a run started (its processes, its folder); set while a run is under way. */
let cleanUp: (() => Promise<void>) | undefined;

/**
 * The bench on a stack of its own, or on `running`: a stack someone else started and stops, whose
 * own settings then stand (`env`, `workflowBundle`, `profileDir` and `keep` are not used); the
 * bench's workspaces are its own, by their ids.
 */
export async function runHeartbeatBench(o: HeartbeatBenchOptions, running?: Stack): Promise<HeartbeatBenchResult> {
  const dir = running?.options.dir ?? mkdtempSync(join(tmpdir(), 'wl-heartbeat-'));
  const stack =
    running ??
    new Stack({
      dir,
      runtimeCommand: null,
      env: o.env,
      ...(o.workflowBundle === undefined ? {} : { workflowBundle: o.workflowBundle }),
      ...(o.profileDir === undefined
        ? {}
        : { nodeArgs: { api: ['--cpu-prof', '--cpu-prof-dir', resolve(o.profileDir)] } }),
      log,
    });
  let floor: { url: string; child: ChildProcess } | undefined;
  cleanUp = async () => {
    if (floor !== undefined && floor.child.exitCode === null) {
      const exited = once(floor.child, 'exit');
      floor.child.kill('SIGTERM');
      await exited;
    }
    if (running !== undefined) return;
    await stack.stop().catch((err: unknown) => log(`stopping the stack: ${String(err)}`));
    if (o.keep) log(`kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  };
  try {
    if (running === undefined) {
      log(`starting the stack in ${dir}`);
      await stack.start();
      await workersPolling(dir, 1);
    }
    const { runtimes, statuses } = await setUp(stack, o, `hb-${Date.now().toString(36)}-`);
    floor = await startFloor(stack.databaseUrl, dir);
    const floorPid = floor.child.pid;
    const measured = (): Target[] => [
      ...targets(stack),
      ...(floorPid === undefined ? [] : [{ name: 'floor', pids: [floorPid] }]),
    ];
    const urls: Record<Side, string> = { floor: floor.url, api: stack.apiUrl };
    const requests = heartbeatRequests(runtimes);
    for (const side of ['floor', 'api'] as const) {
      log(`warm-up: ${side} ${o.warmupS} s`);
      await runRound(side, urls[side], requests, o, o.warmupS, stack.temporalMetricsUrl, measured);
    }
    const rounds: RoundFigures[] = [];
    for (let pair = 1; pair <= o.pairs; pair++) {
      for (const side of ['floor', 'api'] as const) {
        const r = await runRound(side, urls[side], requests, o, o.roundS, stack.temporalMetricsUrl, measured);
        rounds.push(r);
        const f = figures([r]);
        log(
          `round ${pair} ${side}: ${round(f.perSecond)} req/s, p50 ${round(f.p50, 1)} ms, p99 ${round(f.p99, 1)} ms; ` +
            `non-200 ${countsText(r.non200)}, no answer ${r.errors}; signals to the dev server ${r.signals}`,
        );
      }
    }
    const of = (side: Side): RoundFigures[] => rounds.filter((r) => r.side === side);
    const apiBuckets = of('api').flatMap((r) => r.buckets);
    return {
      workspaces: runtimes.length,
      statusesAtStart: statuses,
      rounds,
      floor: figures(of('floor')),
      api: figures(of('api')),
      apiForwarding: figures(apiBuckets.filter((b) => b.signals > 0)),
      apiPlain: figures(apiBuckets.filter((b) => b.signals === 0)),
    };
  } finally {
    await cleanUp();
    cleanUp = undefined;
  }
}

/** The figures, as lines. */
export function heartbeatReport(o: HeartbeatBenchOptions, r: HeartbeatBenchResult): string {
  const line = (name: string, f: Figures, extra = ''): string =>
    `${name.padEnd(26)} ${round(f.perSecond).padStart(7)} ${round(f.p50, 1).padStart(8)} ${round(f.p99, 1).padStart(8)}  ${extra}`;
  const ratio = (a: number, b: number): string => round(a / b, 2);
  return [
    `${r.workspaces} workspaces (as the rounds started: ${r.statusesAtStart}), ${o.connections} connections, ` +
      `${o.pairs} round(s) of ${o.roundS} s per side, alternating`,
    `${'side'.padEnd(26)} ${'req/s'.padStart(7)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)}`,
    ...r.rounds.map((round_, i) =>
      line(
        `round ${Math.floor(i / 2) + 1} ${round_.side}`,
        figures([round_]),
        `non-200 ${countsText(round_.non200)}, no answer ${round_.errors}, signals ${round_.signals}`,
      ),
    ),
    line('floor (all rounds)', r.floor),
    line('api (all rounds)', r.api),
    line(`api, signals flowing`, r.apiForwarding, `${round(r.apiForwarding.seconds)} s of ${round(r.api.seconds)} s`),
    line(`api, no signals`, r.apiPlain, `${round(r.apiPlain.seconds)} s`),
    `ratio API/floor: throughput ${ratio(r.api.perSecond, r.floor.perSecond)} (goal >= 0.8); ` +
      `no signals ${ratio(r.apiPlain.perSecond, r.floor.perSecond)}, signals flowing ${ratio(r.apiForwarding.perSecond, r.floor.perSecond)}; ` +
      `p50 ${ratio(r.api.p50, r.floor.p50)}, p99 ${ratio(r.api.p99, r.floor.p99)}`,
    `CPU per round, core-seconds (bench = the load generator):`,
    ...r.rounds.map(
      (round_, i) => `  round ${Math.floor(i / 2) + 1} ${round_.side}: ${cpuText(round_.cpu, round_.ok)}`,
    ),
  ].join('\n');
}

function parseOptions(): HeartbeatBenchOptions {
  const { values } = parseArgs({
    options: {
      workspaces: { type: 'string', default: '2000' },
      connections: { type: 'string', default: '64' },
      round: { type: 'string', default: '120' },
      pairs: { type: 'string', default: '2' },
      warmup: { type: 'string', default: '10' },
      'sample-every': { type: 'string', default: '2' },
      env: { type: 'string', multiple: true, default: [] },
      quick: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      profile: { type: 'string' },
    },
  });
  const env = Object.fromEntries(
    values.env.map((pair) => {
      const match = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(pair);
      if (match === null) throw new Error(`--env takes KEY=VALUE, got ${pair}`);
      return [match[1] as string, match[2] as string];
    }),
  );
  const profile = values.profile === undefined ? {} : { profileDir: values.profile };
  if (values.quick) return { ...quickOptions, env, keep: values.keep, ...profile };
  return {
    workspaces: positive('workspaces', values.workspaces),
    connections: positive('connections', values.connections),
    roundS: positive('round', values.round),
    pairs: positive('pairs', values.pairs),
    warmupS: positive('warmup', values.warmup),
    sampleEveryS: positive('sample-every', values['sample-every'], false),
    env,
    keep: values.keep,
    ...profile,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  let options: HeartbeatBenchOptions;
  try {
    options = parseOptions();
  } catch (err) {
    console.error(`bench:heartbeat: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(2);
  }
  // Interrupted: the stack's processes and its PostgreSQL cluster stop too.
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => {
      log(`${signal}: stopping`);
      void (cleanUp?.() ?? Promise.resolve()).finally(() => process.exit(130));
    });
  const result = await runHeartbeatBench(options);
  console.log(`\n${heartbeatReport(options, result)}\n`);
  process.exit(0);
}
