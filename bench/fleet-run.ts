/**
 * One fleet size of the fleet bench, on a fresh stack, step by step: create the workspaces,
 * register each once, heartbeat them all (a warm-up until the setup settled, then the measured
 * window), read what the projection says, and sum it up as a FleetResult.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { explainNotOnline, historySample, notOnline, workersPolling } from './fleet-inspect.js';
import { cpuText, report, type FleetResult } from './fleet-report.js';
import {
  HeartbeatLoad,
  bounded,
  callRetrying,
  createWorkspaces,
  statusKey,
  type Answer,
  type CallAnswer,
  type Runtime,
} from './harness/load.js';
import { deadBoxes, type DeadBoxes } from './fleet-dead.js';
import { admissionRefusals, counterBy, perItem, signalsReceived, workflowTasksCompleted } from './harness/metrics.js';
import {
  Sampler,
  cpuBetween,
  cpuTicks,
  memoryMb,
  processStartMs,
  processTree,
  type CpuUse,
  type Target,
  type Usage,
} from './harness/processes.js';
import { Stack } from './harness/stack.js';
import { countBy, countsText, percentile, round } from './harness/stats.js';

export interface FleetOptions {
  sizes: number[];
  durationS: number;
  /** The warm-up (heartbeats before the measured window) ends when the setup settled, or after this. */
  maxWarmupS: number;
  periodS: number;
  workers: number;
  apis: number;
  createConcurrency: number;
  inFlight: number;
  /** Write CPU profiles of the workers and APIs under this folder. */
  profileDir: string | undefined;
  keep: boolean;
  /** Dev server arguments to try against the project's settings (`--dynamic-config-value`, `--sqlite-pragma`). */
  devServerArgs: string[];
  /** Runtimes that stop beating after the measured window (dead boxes); 0: none. */
  dead: number;
  /** How long to wait for the dead boxes' verdicts, s. */
  deadWaitS: number;
  /** The workflows' liveness TTL (WL_LIFECYCLE_CONFIG), s; undefined: the default. */
  livenessTtlS: number | undefined;
  /** Each runtime registers and beats as soon as its workspace is created (no warm-up separation). */
  atOnce: boolean;
  /** The production shape (StackOptions.cluster): the Temporal server on PostgreSQL, nginx in front of the APIs. */
  cluster: boolean;
}

export const log = (line: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);

/** Refused (429), unavailable (503) or unreachable: sent again after Retry-After, as runtimes do. */
const RETRY_ON = [429, 503, 0];

/** Runs `work`, saying its progress every `everyMs`. */
async function withProgress<T>(everyMs: number, say: () => void, work: () => Promise<T>): Promise<T> {
  const timer = setInterval(say, everyMs);
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}

/** Per second since `since` (performance.now()). */
function perSecond(count: number, since: number): number {
  return count / ((performance.now() - since) / 1000);
}

/** The stack's processes as the bench measures them: each on its own, PostgreSQL's as a tree, and this one. */
export function targets(stack: Stack): Target[] {
  const list = stack.instances().map((i) => ({ name: i.name, pids: [i.pid] }));
  const postgres = stack.postgresPid();
  if (postgres !== undefined) list.push({ name: 'postgres', pids: processTree(postgres) });
  list.push({ name: 'bench', pids: [process.pid] });
  return list;
}

/** Every worker's resident memory, summed. */
function workerMb(stack: Stack): number {
  return stack
    .instances()
    .filter((i) => i.piece === 'worker')
    .reduce((sum, i) => sum + memoryMb([i.pid]), 0);
}

interface Creation {
  runtimes: Runtime[];
  perS: number;
  seconds: number;
  cpu: CpuUse[];
  persistence: string;
}

/** Creates `n` workspaces (ids `<run><i>`), and what that cost each process and the dev server's storage. */
async function create(
  stack: Stack,
  run: string,
  n: number,
  o: FleetOptions,
  onCreated: (runtime: Runtime) => void = () => undefined,
): Promise<Creation> {
  const persistence = (): Promise<Map<string, number>> =>
    counterBy([stack.temporalMetricsUrl], 'persistence_requests', 'operation').catch(() => new Map());
  const persistenceBefore = await persistence();
  const cpuBefore = cpuTicks(targets(stack));
  const started = performance.now();
  let created = 0;
  const { runtimes, failures } = await withProgress(
    3_000,
    () => log(`create: ${created}/${n} (${round(perSecond(created, started))}/s)`),
    () =>
      createWorkspaces({
        apiUrls: stack.loadUrls,
        adminToken: stack.adminToken,
        ids: Array.from({ length: n }, (_, i) => `${run}${i}`),
        concurrency: o.createConcurrency,
        retryOn: RETRY_ON,
        onCreated: (runtime) => {
          created++;
          onCreated(runtime);
        },
      }),
  );
  const perS = perSecond(created, started);
  const cpu = cpuBetween(cpuBefore, cpuTicks(targets(stack)));
  // The server publishes its counters late: wait until they show every start the API
  // acknowledged, for at most 10 s.
  let persistenceAfter = await persistence();
  const starts = (m: Map<string, number>): number => m.get('CreateWorkflowExecution') ?? 0;
  for (let waited = 0; starts(persistenceAfter) - starts(persistenceBefore) < created && waited < 10_000;) {
    await sleep(250);
    waited += 250;
    persistenceAfter = await persistence();
  }
  const perWorkspace = perItem(persistenceBefore, persistenceAfter, created);
  const failed = countBy(failures, statusKey);
  log(
    `create: ${created}/${n} in ${round((performance.now() - started) / 1000, 1)} s = ${round(perS, 1)} workspaces/s` +
      (failed.size > 0 ? `; failed ${countsText(failed)}` : ''),
  );
  log(`create: CPU ${cpuText(cpu, created)}`);
  log(`create: the dev server's persistence requests per workspace: ${perWorkspace}`);
  return { runtimes, perS, seconds: (performance.now() - started) / 1000, cpu, persistence: perWorkspace };
}

/** The runtime registers (push mode, a loopback URL nobody listens on), to the `i`-th load address in turn, as runtimes retry. */
function registerOne(stack: Stack, runtime: Runtime, i: number): Promise<CallAnswer> {
  const body = {
    id: runtime.id,
    url: `http://127.0.0.1:9/${runtime.id}`,
    agent_card: { name: runtime.id },
    delivery_mode: 'push',
  };
  const url = `${stack.loadUrls[i % stack.loadUrls.length] ?? stack.apiUrl}/registry/register`;
  return callRetrying(url, 'POST', body, runtime.token, RETRY_ON);
}

/** Registers each workspace once (push mode, a loopback URL nobody listens on: nothing dispatches to it). */
export async function register(
  stack: Stack,
  fleet: Runtime[],
  concurrency: number,
): Promise<{ registered: number; perS: number }> {
  let registered = 0;
  const failed = new Map<string, number>();
  const started = performance.now();
  await withProgress(
    3_000,
    () => log(`register: ${registered}/${fleet.length} (${round(perSecond(registered, started))}/s)`),
    () =>
      bounded(fleet, concurrency, async (runtime, i) => {
        const answer = await registerOne(stack, runtime, i);
        if (answer.status === 200) registered++;
        else failed.set(statusKey(answer), (failed.get(statusKey(answer)) ?? 0) + 1);
      }),
  );
  const perS = perSecond(registered, started);
  log(
    `register: ${registered}/${fleet.length} = ${round(perS, 1)}/s` +
      (failed.size > 0 ? `; failed ${countsText(failed)}` : ''),
  );
  return { registered, perS };
}

/** What the heartbeats sent in one phase (warm-up or measured) came to. */
interface LoadFigures {
  sent: number;
  latencies: number[];
  refused: Map<string, number>;
  retried: number;
  late: number;
  maxLagMs: number;
  elapsedMs: number;
}

/** A call sent more than this after its slot counts as late. */
const LATE_MS = 1_000;

function loadFigures(answers: Answer[], elapsedMs: number): LoadFigures {
  return {
    sent: answers.length,
    latencies: answers.filter((a) => a.status === 200).map((a) => a.ms),
    refused: countBy(
      answers.filter((a) => a.status !== 200),
      statusKey,
    ),
    retried: answers.filter((a) => a.retry).length,
    late: answers.filter((a) => a.lagMs > LATE_MS).length,
    maxLagMs: answers.reduce((max, a) => Math.max(max, a.lagMs), 0),
    elapsedMs,
  };
}

interface Heartbeats {
  warmup: LoadFigures;
  measured: LoadFigures;
  /** When the measured window started and ended, ms since the epoch. */
  window: { from: number; to: number };
}

/** What runs at each step of the heartbeats. */
interface HeartbeatHooks {
  /** Whether the setup has settled (the warm-up ends). */
  settled: () => Promise<boolean>;
  /** As the measured window opens. */
  onMeasure: () => void;
  /** As it closes. */
  onWindowEnd: () => Promise<void>;
  /** After the window, the load still running. */
  afterWindow: () => Promise<void>;
}

/**
 * Every workspace beats once per period, as runtimes do (harness/load.ts, `runtime` pace), from
 * the load's start (`load` is started); the window is measured once `settled` says so (or
 * `maxWarmupS` passed), for `durationS`. A call counts in the phase it was sent in.
 */
async function heartbeats(load: HeartbeatLoad, o: FleetOptions, hooks: HeartbeatHooks): Promise<Heartbeats> {
  let measureFrom = Infinity;
  let seen = 0;
  let phase = { from: 0, ok: 0, refused: new Map<string, number>(), late: 0, maxLagMs: 0 };
  let last = { at: 0, sent: 0, ok: 0 };
  const progress = setInterval(() => {
    for (const answer of load.answers.slice(seen)) {
      if (answer.at < phase.from) continue;
      if (answer.status === 200) phase.ok++;
      else phase.refused.set(statusKey(answer), (phase.refused.get(statusKey(answer)) ?? 0) + 1);
      if (answer.lagMs > LATE_MS) phase.late++;
      phase.maxLagMs = Math.max(phase.maxLagMs, answer.lagMs);
    }
    seen = load.answers.length;
    const at = load.now();
    const seconds = (at - last.at) / 1000;
    const label =
      measureFrom === Infinity
        ? `warm-up ${round(at / 1000)} s`
        : `${round((at - measureFrom) / 1000)}/${o.durationS} s`;
    log(
      `load ${label}: ${round((load.sent - last.sent) / seconds)} sent/s, ${round((phase.ok - last.ok) / seconds)} ok/s, ` +
        `in flight ${load.inFlight}, non-200 ${countsText(phase.refused)}, late ${phase.late}, max lag ${round(phase.maxLagMs)} ms`,
    );
    last = { at, sent: load.sent, ok: phase.ok };
  }, 5_000);
  let window = { from: 0, to: 0 };
  let to = 0;
  try {
    for (;;) {
      await sleep(3_000);
      const warm = await hooks.settled().catch(() => false);
      if (!warm && load.now() <= o.maxWarmupS * 1_000) continue;
      log(`load: ${warm ? 'settled' : `not settled after ${o.maxWarmupS} s`}; measuring ${o.durationS} s from now`);
      break;
    }
    measureFrom = load.now();
    phase = { from: measureFrom, ok: 0, refused: new Map(), late: 0, maxLagMs: 0 };
    last = { at: measureFrom, sent: load.sent, ok: 0 };
    window = { from: Date.now(), to: 0 };
    hooks.onMeasure();
    await sleep(o.durationS * 1_000);
    to = load.now();
    window = { ...window, to: Date.now() };
    await hooks.onWindowEnd();
    await hooks.afterWindow();
  } finally {
    clearInterval(progress);
    await load.stop();
  }
  return {
    warmup: loadFigures(load.between(0, measureFrom), measureFrom),
    measured: loadFigures(load.between(measureFrom, to), to - measureFrom),
    window,
  };
}

/** One fleet size on a fresh stack; the stack stops (and its folder goes, unless `keep`) at the end. */
export async function runSize(n: number, o: FleetOptions): Promise<FleetResult> {
  const dir = mkdtempSync(join(tmpdir(), 'wl-fleet-'));
  const profile = o.profileDir === undefined ? undefined : resolve(o.profileDir, `n${n}`);
  const profileArgs = (piece: string): string[] => {
    if (profile === undefined) return [];
    mkdirSync(join(profile, piece), { recursive: true });
    return ['--cpu-prof', '--cpu-prof-dir', join(profile, piece)];
  };
  const stack = new Stack({
    dir,
    runtimeCommand: null,
    workers: o.workers,
    apis: o.apis,
    nodeArgs: { worker: profileArgs('worker'), api: profileArgs('api') },
    devServerArgs: o.devServerArgs,
    env:
      o.livenessTtlS === undefined
        ? {}
        : { WL_LIFECYCLE_CONFIG: JSON.stringify({ livenessTtlMs: o.livenessTtlS * 1_000 }) },
    cluster: o.cluster,
    log,
  });
  const run = `fleet-${Date.now().toString(36)}-`;
  try {
    log(
      `N=${n}: starting a fresh stack in ${dir} (${o.cluster ? 'Temporal server, nginx, ' : ''}${o.workers} worker(s), ${o.apis} API(s))`,
    );
    await stack.start();
    log(`N=${n}: stack up: APIs ${stack.apiUrls.join(' ')}, Temporal ${stack.temporalAddress}`);
    await workersPolling(dir, o.workers);
    const workerMbBefore = workerMb(stack);
    // The workers' peak memory over the whole run, beside the window's (sampler, below).
    const runSampler = new Sampler(() => targets(stack).filter((t) => t.name.startsWith('worker')));
    runSampler.start();

    // Heartbeats as runtimes send them: each runtime from its register on (`atOnce`: as soon as
    // its workspace is created), else all of them once every workspace registered.
    const load = new HeartbeatLoad({
      apiUrls: stack.loadUrls,
      runtimes: [],
      rate: n / o.periodS,
      periodMs: o.periodS * 1_000,
      maxInFlight: o.inFlight,
      pace: 'runtime',
    });
    let creation: Creation;
    let registered: number;
    let registerPerS: number;
    if (o.atOnce) {
      log(`at once: each runtime registers and beats as soon as its workspace is created`);
      load.start();
      let ok = 0;
      const registering: Promise<void>[] = [];
      creation = await create(stack, run, n, o, (runtime) => {
        registering.push(
          registerOne(stack, runtime, registering.length).then((answer) => {
            if (answer.status === 200) ok++;
            load.add(runtime);
          }),
        );
      });
      await Promise.all(registering);
      registered = ok;
      registerPerS = ok / (load.now() / 1000);
      log(
        `register: ${ok}/${creation.runtimes.length} answered 200, ${round(load.now() / 1000, 1)} s after the first create`,
      );
    } else {
      creation = await create(stack, run, n, o);
      ({ registered, perS: registerPerS } = await register(stack, creation.runtimes, o.createConcurrency));
      for (const runtime of creation.runtimes) load.add(runtime);
      load.start();
    }
    const fleet = creation.runtimes;

    // Measured once the setup has settled (every workspace projected online: its register and
    // reconcile handled), sampled then.
    const sampler = new Sampler(() => targets(stack));
    const loopDelay = monitorEventLoopDelay({ resolution: 10 });
    log(
      `load: ${fleet.length} workspaces, one beat each per ${o.periodS} s (${round(fleet.length / o.periodS, 1)}/s), ` +
        `at most ${o.inFlight} in flight; warm-up until the setup settled (at most ${o.maxWarmupS} s), then ${o.durationS} s measured`,
    );
    let workerMbAfterSetup = 0;
    let refusalsAtStart = Promise.resolve(new Map<string, number>());
    const serverCounters = (): Promise<{ tasks: number; signals: number }> =>
      Promise.all([workflowTasksCompleted(stack.temporalMetricsUrl), signalsReceived(stack.temporalMetricsUrl)]).then(
        ([tasks, signals]) => ({ tasks, signals }),
      );
    let countersAtStart: Promise<{ tasks: number; signals: number }> = Promise.resolve({ tasks: NaN, signals: NaN });
    let windowServer = { tasks: NaN, signals: NaN };
    let usage: Usage[] = [];
    let settled = { count: 0, statuses: '' };
    let dead: DeadBoxes | undefined;
    let lastSettle = '';
    const { warmup, measured, window } = await heartbeats(load, o, {
      settled: async () => {
        const state = await notOnline(stack.databaseUrl, run);
        if (state.statuses !== lastSettle) log(`settle: ${state.statuses}`);
        lastSettle = state.statuses;
        return state.count === 0;
      },
      onMeasure: () => {
        workerMbAfterSetup = workerMb(stack);
        refusalsAtStart = admissionRefusals(stack.apiUrls);
        countersAtStart = serverCounters().catch(() => ({ tasks: NaN, signals: NaN }));
        loopDelay.enable();
        sampler.start();
      },
      onWindowEnd: async () => {
        usage = sampler.stop();
        loopDelay.disable();
        const [before, after] = await Promise.all([countersAtStart, serverCounters()]).catch(() => [
          { tasks: NaN, signals: NaN },
          { tasks: NaN, signals: NaN },
        ]);
        windowServer = { tasks: after.tasks - before.tasks, signals: after.signals - before.signals };
        // What the projection says, once its writes have landed (they follow the transitions).
        settled = await notOnline(stack.databaseUrl, run);
        for (let waited = 0; settled.count > 0 && waited < 30_000; waited += 1_000) {
          if (waited % 5_000 === 0) log(`projection: ${settled.statuses}; waiting for its writes (up to 30 s)`);
          await sleep(1_000);
          settled = await notOnline(stack.databaseUrl, run);
        }
        if (settled.count > 0) await explainNotOnline(stack, run, log);
      },
      afterWindow: async () => {
        if (o.dead > 0) dead = await deadBoxes(stack.databaseUrl, load, fleet, o.dead, o.deadWaitS * 1_000, log);
      },
    });
    const workerPeakRunMb = runSampler.stop().reduce((sum, u) => sum + u.peakMb, 0);
    const windowAdmissionRefusals = await Promise.all([refusalsAtStart, admissionRefusals(stack.apiUrls)]).then(
      ([before, after]) => countsText(after, before),
      (err: unknown) => `? (${String(err)})`,
    );
    const warmupRefused = countsText(warmup.refused);
    const warmupS = warmup.elapsedMs / 1000;
    log(
      `warm-up: ${round(warmupS, 1)} s; ${warmup.latencies.length} answered 200 (p99 ${round(percentile(warmup.latencies, 99))} ms), ` +
        `non-200 ${warmupRefused}`,
    );
    const misses = await historySample(stack, fleet, 20).catch((err: unknown) => `? (${String(err)})`);
    const seconds = measured.elapsedMs / 1000;
    const result: FleetResult = {
      workspaces: n,
      created: fleet.length,
      createPerS: creation.perS,
      createS: creation.seconds,
      createCpu: creation.cpu,
      createPersistence: creation.persistence,
      registered,
      registerPerS,
      atOnce: o.atOnce,
      nominalPerS: fleet.length / o.periodS,
      offeredPerS: measured.sent / seconds,
      acceptedPerS: measured.latencies.length / seconds,
      p50: percentile(measured.latencies, 50),
      p99: percentile(measured.latencies, 99),
      refused: measured.refused,
      retried: measured.retried,
      late: measured.late,
      maxLagMs: measured.maxLagMs,
      notOnline: settled.count,
      statuses: settled.statuses,
      workerMbBefore,
      workerMbAfterSetup,
      workerPeakRunMb,
      warmupS,
      settled: warmupS <= o.maxWarmupS,
      warmupNon200: warmupRefused,
      windowAdmissionRefusals,
      windowWorkflowTasks: windowServer.tasks,
      windowSignals: windowServer.signals,
      windowS: seconds,
      loadLoopDelayMs: { p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 },
      dead,
      historySample: misses,
      usage,
    };
    console.log(report(result));
    const crashes = stack.crashes();
    if (crashes.length > 0) log(`N=${n}: !! processes exited on their own: ${crashes.map((c) => c.piece).join(', ')}`);
    if (profile !== undefined) {
      // When the load ran, against when the processes were told to stop (a profile ends then):
      // bench/cpuprofile.ts counts the samples of the load only.
      const starts = Object.fromEntries(stack.instances().map((i) => [String(i.pid), processStartMs(i.pid)]));
      writeFileSync(
        join(profile, 'window.json'),
        `${JSON.stringify({ loadStartedAt: window.from, loadEndedAt: window.to, starts })}\n`,
      );
    }
    return result;
  } finally {
    log(`N=${n}: stopping the stack`);
    await stack.stop().catch((err: unknown) => log(`stopping the stack: ${String(err)}`));
    if (o.keep) log(`kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}
