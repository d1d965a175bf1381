/**
 * `npm run bench:fleet`: a fleet of workspaces heartbeating through the real pieces, each its own
 * process (chaos/stack.ts: PostgreSQL, a Temporal dev server, `--workers` worker processes and
 * `--apis` API processes). For each fleet size, on a fresh stack: create the workspaces through
 * the API, register each once, then one scheduler sends every workspace's heartbeat once per
 * `--period` seconds, spread evenly, with a bounded number in flight: a warm-up until the setup
 * settled (every workspace projected online), then `--duration` seconds measured.
 * Prints progress on the way and, per size, throughput, latency, refusals, the workspaces not
 * online at the end, and each process's peak memory and mean CPU; then one Markdown table.
 *
 *   npm run bench:fleet -- --workspaces 1000,3000,10000 --duration 120
 *                          [--period 30] [--workers 1] [--apis 1] [--create-concurrency 32]
 *                          [--in-flight 256] [--max-warmup 600] [--profile DIR] [--keep]
 *                          [--dev-server-config KEY=VALUE ...] [--dev-server-pragma NAME=VALUE ...]
 *
 * Managed workspaces, as a fleet has (created `provisioning`, online on their register, which
 * runs a reconcile of their empty plugin set), but no box processes: the worker runs with no
 * runtime command (WL_RUNTIME_COMMAND empty) and no box folder exists, so a restart, should dead
 * detection ask for one, starts nothing. The measured window starts once the setup has settled,
 * so it measures the fleet, not the backlog of its creation; the warm-up is reported apart.
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { admissionRefusals, call, counterBy, percentile, refusedText } from '../chaos/load.js';
import { Stack } from '../chaos/stack.js';
import { TASK_QUEUE, stateQuery, workspaceWorkflowId } from '../workflows/definitions.js';
import { idleHeartbeat } from '../workflows/payloads.js';

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
}

interface Runtime {
  id: string;
  token: string;
}

/** Peak memory and mean CPU of one process (or process tree) over the load. */
interface Usage {
  name: string;
  peakMb: number;
  meanCpu: number;
}

export interface FleetResult {
  workspaces: number;
  created: number;
  createPerS: number;
  /** CPU each process used while the workspaces were created, core-seconds. */
  createCpu: CpuUse[];
  /** The dev server's persistence requests per workspace created, by operation, most first. */
  createPersistence: string;
  registered: number;
  registerPerS: number;
  nominalPerS: number;
  offeredPerS: number;
  acceptedPerS: number;
  p50: number;
  p99: number;
  /** Non-200 answers by status ('net' for a network error). */
  refused: Map<string, number>;
  retried: number;
  /** Sends later than 1 s after their slot (the in-flight bound held them back). */
  late: number;
  maxLagMs: number;
  notOnline: number;
  statuses: string;
  workerMbBefore: number;
  workerMbAfterSetup: number;
  /** Heartbeats ran from the last register until the setup settled; not measured. */
  warmupS: number;
  warmupNon200: string;
  /** The APIs' 429s in the measured window, by why admission refused them (`api_admission_refused`). */
  windowAdmissionRefusals: string;
  historySample: string;
  usage: Usage[];
}

const log = (line: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
const round = (value: number, digits = 0): string => (Number.isFinite(value) ? value.toFixed(digits) : '-');

// --- /proc sampling ------------------------------------------------------------------------------

/** Clock ticks per second of /proc's CPU times. */
export const CLOCK_TICKS = 100;

export interface ProcStat {
  ppid: number;
  ticks: number;
}

/** A process's parent and the CPU time (user + system, in clock ticks) it has used; undefined once it is gone. */
export function procStat(pid: number): ProcStat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces: the fields after it start past its ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) };
  } catch {
    return undefined;
  }
}

/** When a process started, ms since the epoch (to 10 ms), from /proc. */
function processStartMs(pid: number): number {
  // Boot time from the uptime (10 ms), not /proc/stat's btime (whole seconds).
  const bootMs = Date.now() - Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1000;
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const startTicks = Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[19]);
  return bootMs + (startTicks / CLOCK_TICKS) * 1000;
}

/** The process and its descendants. */
function tree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = procStat(Number(entry));
    if (stat === undefined) continue;
    const list = children.get(stat.ppid) ?? [];
    list.push(Number(entry));
    children.set(stat.ppid, list);
  }
  const pids = [root];
  for (let i = 0; i < pids.length; i++) pids.push(...(children.get(pids[i] ?? 0) ?? []));
  return pids;
}

/** Memory in MB: VmRSS of one process; for a tree (PostgreSQL's), the sum of PSS, which counts shared memory once. */
function memoryMb(pids: number[]): number {
  const field = pids.length === 1 ? 'VmRSS' : 'Pss';
  let kb = 0;
  for (const pid of pids) {
    try {
      const text = readFileSync(`/proc/${pid}/${pids.length === 1 ? 'status' : 'smaps_rollup'}`, 'utf8');
      kb += Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return kb / 1024;
}

/** Samples each process of the stack (and this one) once a second: peak memory, mean CPU. */
class Sampler {
  private readonly last = new Map<string, { ticks: Map<number, number>; at: number }>();
  private readonly figures = new Map<string, { peakMb: number; cpuSum: number; samples: number }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly targets: () => { name: string; pids: number[] }[]) {}

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), 1_000);
  }

  stop(): Usage[] {
    clearInterval(this.timer);
    this.sample();
    return [...this.figures].map(([name, f]) => ({
      name,
      peakMb: f.peakMb,
      meanCpu: f.samples > 0 ? f.cpuSum / f.samples : NaN,
    }));
  }

  private sample(): void {
    const at = performance.now();
    for (const { name, pids } of this.targets()) {
      const ticks = new Map<number, number>();
      for (const pid of pids) {
        const stat = procStat(pid);
        if (stat !== undefined) ticks.set(pid, stat.ticks);
      }
      const figures = this.figures.get(name) ?? { peakMb: 0, cpuSum: 0, samples: 0 };
      figures.peakMb = Math.max(figures.peakMb, memoryMb(pids));
      const previous = this.last.get(name);
      if (previous !== undefined && at > previous.at) {
        // Only processes seen in both samples: one that started or ended in between is not counted.
        let used = 0;
        for (const [pid, now] of ticks) used += now - (previous.ticks.get(pid) ?? now);
        figures.cpuSum += ((used / CLOCK_TICKS) * 1000 * 100) / (at - previous.at);
        figures.samples++;
      }
      this.figures.set(name, figures);
      this.last.set(name, { ticks, at });
    }
  }
}

/** CPU seconds one process (or tree) used over a phase of the run. */
interface CpuUse {
  name: string;
  seconds: number;
}

/**
 * The CPU each target has used so far (clock ticks, its processes summed); diff two to get a
 * phase's. A process of a tree that ends in between takes its ticks with it (PostgreSQL's pooled
 * backends stay for the run).
 */
function cpuTicks(targets: { name: string; pids: number[] }[]): Map<string, number> {
  return new Map(
    targets.map(({ name, pids }) => [name, pids.reduce((sum, pid) => sum + (procStat(pid)?.ticks ?? 0), 0)]),
  );
}

/** What each target used between two `cpuTicks` readings, in core-seconds. */
function cpuBetween(before: Map<string, number>, after: Map<string, number>): CpuUse[] {
  return [...after].map(([name, ticks]) => ({ name, seconds: (ticks - (before.get(name) ?? ticks)) / CLOCK_TICKS }));
}

/** `temporal 41.2 s (4.1 ms each), ...`: core-seconds per process, and per item of the phase. */
function cpuText(use: CpuUse[], items: number): string {
  const total = use.reduce((sum, u) => sum + u.seconds, 0);
  return [...use, { name: 'all', seconds: total }]
    .map((u) => `${u.name} ${round(u.seconds, 1)} s (${round((u.seconds * 1000) / Math.max(1, items), 2)} ms each)`)
    .join(', ');
}

/** `CreateWorkflowExecution 1.00, ...`: what a counter grew by between two readings, per item, most first. */
function perItem(before: Map<string, number>, after: Map<string, number>, items: number): string {
  const grown = [...after]
    .map(([key, value]): [string, number] => [key, (value - (before.get(key) ?? 0)) / Math.max(1, items)])
    .filter(([, value]) => value >= 0.005)
    .sort(([, a], [, b]) => b - a);
  const total = grown.reduce((sum, [, value]) => sum + value, 0);
  return grown.length === 0
    ? 'none read'
    : `${round(total, 2)} in all: ${grown.map(([key, value]) => `${key} ${round(value, 2)}`).join(', ')}`;
}

// --- bounded work ------------------------------------------------------------------------------

/** Runs `work` for every item with at most `concurrency` at once. */
async function bounded<T>(items: T[], concurrency: number, work: (item: T, index: number) => Promise<void>) {
  let next = 0;
  const lanes = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    for (let i = next++; i < items.length; i = next++) await work(items[i] as T, i);
  });
  await Promise.all(lanes);
}

/** Progress every few seconds while `work` runs. */
async function withProgress<T>(every: number, report: () => void, work: () => Promise<T>): Promise<T> {
  const timer = setInterval(report, every);
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}

/** One admin or runtime call, retried after Retry-After while refused (429/503), up to `attempts`. */
async function persistent(url: string, body: unknown, bearer: string, attempts = 20) {
  for (let attempt = 1; ; attempt++) {
    const answer = await call(url, 'POST', body, bearer);
    const retryable = answer.status === 429 || answer.status === 503 || answer.status === 0;
    if (!retryable || attempt >= attempts) return answer;
    await sleep(1_000 * (answer.retryAfter ?? 1) * (0.5 + Math.random()));
  }
}

// --- the heartbeat schedule ---------------------------------------------------------------------

interface Due {
  index: number;
  /** When to send. */
  due: number;
  /** The slot in the workspace's cadence this send serves (a retry keeps its slot). */
  slot: number;
}

/** A binary min-heap on `due`. */
class Schedule {
  private readonly heap: Due[] = [];

  get size(): number {
    return this.heap.length;
  }

  peek(): Due | undefined {
    return this.heap[0];
  }

  push(item: Due): void {
    const heap = this.heap;
    heap.push(item);
    for (let i = heap.length - 1; i > 0;) {
      const parent = (i - 1) >> 1;
      if ((heap[parent] as Due).due <= item.due) break;
      heap[i] = heap[parent] as Due;
      heap[parent] = item;
      i = parent;
    }
  }

  pop(): Due | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    heap[0] = last;
    for (let i = 0; ;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let least = i;
      if (left < heap.length && (heap[left] as Due).due < (heap[least] as Due).due) least = left;
      if (right < heap.length && (heap[right] as Due).due < (heap[least] as Due).due) least = right;
      if (least === i) break;
      [heap[i], heap[least]] = [heap[least] as Due, heap[i] as Due];
      i = least;
    }
    return top;
  }
}

interface LoadFigures {
  sent: number;
  latencies: number[];
  refused: Map<string, number>;
  retried: number;
  late: number;
  maxLagMs: number;
  elapsedMs: number;
}

/**
 * One scheduler for the whole fleet: workspace i beats at offset i/N of the period, then once
 * per period; at most `inFlight` calls at once (a send the bound holds back goes late, and is
 * counted); a 429 or 503 reschedules that workspace's beat after its Retry-After.
 * It beats from the start, as runtimes do, but measures only once `warmedUp` says so (the
 * fleet's setup settled, or `maxWarmupS` passed): then for `durationS`. A call counts in the
 * phase it was sent in.
 */
async function heartbeatLoad(
  apiUrls: string[],
  runtimes: Runtime[],
  o: { durationS: number; periodS: number; inFlight: number },
  warmedUp: () => Promise<boolean>,
  maxWarmupS: number,
  onMeasure: () => void,
): Promise<{ warmup: LoadFigures; measured: LoadFigures; warmupS: number }> {
  const periodMs = o.periodS * 1_000;
  const started = performance.now();
  const now = (): number => performance.now() - started;
  const schedule = new Schedule();
  runtimes.forEach((_, index) => {
    const slot = (index / runtimes.length) * periodMs;
    schedule.push({ index, due: slot, slot });
  });
  const fresh = (): LoadFigures => ({
    sent: 0,
    latencies: [],
    refused: new Map(),
    retried: 0,
    late: 0,
    maxLagMs: 0,
    elapsedMs: 0,
  });
  const warmup = fresh();
  let figures = warmup;
  let measuring = false;
  let measureFromMs = 0;
  let endMs = Infinity;
  let checking = false;
  const checkWarm = setInterval(() => {
    if (measuring || checking) return;
    checking = true;
    void warmedUp()
      .then((warm) => {
        if (measuring || !(warm || now() > maxWarmupS * 1_000)) return;
        warmup.elapsedMs = now();
        measuring = true;
        measureFromMs = now();
        endMs = measureFromMs + o.durationS * 1_000;
        figures = fresh();
        window = { at: now(), sent: 0, ok: 0 };
        onMeasure();
        log(`load: ${warm ? 'settled' : `not settled after ${maxWarmupS} s`}; measuring ${o.durationS} s from now`);
      })
      .finally(() => (checking = false));
  }, 3_000);
  let outstanding = 0;
  let next = 0;
  let window = { at: 0, sent: 0, ok: 0 };

  const send = (item: Due): void => {
    const runtime = runtimes[item.index];
    if (runtime === undefined) return;
    const phase = figures;
    const lag = now() - item.due;
    phase.maxLagMs = Math.max(phase.maxLagMs, lag);
    if (lag > 1_000) phase.late++;
    phase.sent++;
    outstanding++;
    const url = `${apiUrls[next++ % apiUrls.length]}/registry/heartbeat`;
    const body = idleHeartbeat(runtime.id, Math.round(now() / 1000));
    void call(url, 'POST', body, runtime.token).then(({ status, ms, retryAfter }) => {
      outstanding--;
      if (status === 200) phase.latencies.push(ms);
      else {
        const key = status === 0 ? 'net' : String(status);
        phase.refused.set(key, (phase.refused.get(key) ?? 0) + 1);
      }
      const at = now();
      // Retry-After honoured as runtimes do (simulator/runtime.ts): with ±50% jitter, so the
      // refused ones do not all come back at once; past the next slot, the next beat is the retry.
      const retryAt = retryAfter === undefined ? Infinity : at + retryAfter * 1_000 * (0.5 + Math.random());
      if ((status === 429 || status === 503) && retryAt < item.slot + periodMs) {
        phase.retried++;
        schedule.push({ ...item, due: retryAt });
        return;
      }
      const slot = item.slot + periodMs;
      schedule.push({ index: item.index, slot, due: Math.max(slot, at) });
    });
  };

  const progress = setInterval(() => {
    const at = now();
    const seconds = (at - window.at) / 1000;
    const ok = figures.latencies.length;
    const refused = [...figures.refused].map(([k, v]) => `${k}: ${v}`).join(', ') || 'none';
    const label = measuring
      ? `${round((at - measureFromMs) / 1000)}/${o.durationS} s`
      : `warm-up ${round(at / 1000)} s`;
    log(
      `load ${label}: ${round((figures.sent - window.sent) / seconds)} sent/s, ` +
        `${round((ok - window.ok) / seconds)} ok/s, in flight ${outstanding}, non-200 ${refused}, ` +
        `late ${figures.late}, max lag ${round(figures.maxLagMs)} ms`,
    );
    window = { at, sent: figures.sent, ok };
  }, 5_000);

  while (now() < endMs) {
    for (let top = schedule.peek(); top !== undefined && top.due <= now() && outstanding < o.inFlight;) {
      send(schedule.pop() as Due);
      top = schedule.peek();
    }
    const top = schedule.peek();
    const wait = top === undefined || outstanding >= o.inFlight ? 5 : Math.max(1, Math.min(50, top.due - now()));
    await sleep(Math.min(wait, Math.max(1, endMs - now())));
  }
  figures.elapsedMs = now() - measureFromMs;
  clearInterval(progress);
  clearInterval(checkWarm);
  // The calls in flight are answered (each is bounded by the call's timeout).
  while (outstanding > 0) await sleep(20);
  return { warmup, measured: figures, warmupS: warmup.elapsedMs / 1000 };
}

// --- one fleet size ----------------------------------------------------------------------------

async function notOnline(databaseUrl: string, prefix: string): Promise<{ count: number; statuses: string }> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ status: string; n: string }>(
      `SELECT status, count(*) AS n FROM workspaces WHERE id LIKE $1 GROUP BY status ORDER BY status`,
      [`${prefix}%`],
    );
    const count = rows.filter((row) => row.status !== 'online').reduce((sum, row) => sum + Number(row.n), 0);
    return { count, statuses: rows.map((row) => `${row.status}: ${row.n}`).join(', ') };
  } finally {
    await client.end();
  }
}

/** What the workflows of a few workspaces the projection does not show online say of themselves. */
async function explainNotOnline(stack: Stack, prefix: string): Promise<void> {
  const db = new pg.Client({ connectionString: stack.databaseUrl });
  await db.connect();
  let ids: string[];
  try {
    const { rows } = await db.query<{ id: string }>(
      `SELECT id FROM workspaces WHERE id LIKE $1 AND status <> 'online' ORDER BY id LIMIT 3`,
      [`${prefix}%`],
    );
    ids = rows.map((row) => row.id);
  } finally {
    await db.end();
  }
  const client = await stack.temporal();
  for (const id of ids) {
    const handle = client.workflow.getHandle(workspaceWorkflowId(id));
    try {
      const state = await handle.query(stateQuery);
      const pending = (await handle.describe()).raw.pendingActivities ?? [];
      log(
        `  ${id}: the workflow says ${state.status}; registers ${state.counters.registers}, heartbeats ` +
          `${state.counters.heartbeats}, projection writes ${state.counters.projectionWrites}; pending activities: ` +
          (pending.map((a) => `${a.activityType?.name ?? '?'} attempt ${a.attempt ?? '?'}`).join(', ') || 'none'),
      );
    } catch (err) {
      log(`  ${id}: cannot ask its workflow: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
}

/**
 * What a sample of histories says of the workers: workflow tasks on the normal task queue after
 * a run's first (each a sticky-cache miss: the workflow was evicted from its worker's cache, or
 * its worker did not take the sticky task in time, so the next task replayed the history),
 * workflow tasks that failed or timed out, and how long tasks waited to be picked up.
 */
async function historySample(stack: Stack, runtimes: Runtime[], sample: number): Promise<string> {
  const client = await stack.temporal();
  const step = Math.max(1, Math.floor(runtimes.length / sample));
  let misses = 0;
  let failed = 0;
  let timedOut = 0;
  let tasks = 0;
  let histories = 0;
  const waits: number[] = [];
  const ms = (time: { seconds?: { toNumber(): number } | number | null; nanos?: number | null } | null | undefined) =>
    time
      ? (typeof time.seconds === 'number' ? time.seconds : (time.seconds?.toNumber() ?? 0)) * 1000 +
        (time.nanos ?? 0) / 1e6
      : NaN;
  for (let i = 0; i < runtimes.length && histories < sample; i += step) {
    const runtime = runtimes[i];
    if (runtime === undefined) continue;
    const events = (await client.workflow.getHandle(workspaceWorkflowId(runtime.id)).fetchHistory()).events ?? [];
    const scheduled = events.filter((e) => e.workflowTaskScheduledEventAttributes);
    tasks += scheduled.length;
    misses += scheduled
      .slice(1)
      .filter((e) => e.workflowTaskScheduledEventAttributes?.taskQueue?.name === TASK_QUEUE).length;
    failed += events.filter((e) => e.workflowTaskFailedEventAttributes).length;
    timedOut += events.filter((e) => e.workflowTaskTimedOutEventAttributes).length;
    const scheduledAt = new Map(scheduled.map((e) => [Number(e.eventId), ms(e.eventTime)]));
    for (const e of events) {
      const started = e.workflowTaskStartedEventAttributes;
      if (!started) continue;
      const at = scheduledAt.get(Number(started.scheduledEventId));
      if (at !== undefined) waits.push(ms(e.eventTime) - at);
    }
    histories++;
  }
  return (
    `in ${histories} histories: ${tasks} workflow tasks, ${misses} sticky-cache misses, ${failed} failed, ` +
    `${timedOut} timed out; scheduled-to-started p50 ${round(percentile(waits, 50))} ms, ` +
    `p99 ${round(percentile(waits, 99))} ms, max ${round(Math.max(...waits))} ms`
  );
}

/** Waits until every worker said it polls (it bundled the workflows and connected), then a moment more. */
async function workersPolling(dir: string, workers: number): Promise<void> {
  const deadline = Date.now() + 120_000;
  const polling = (i: number): boolean => {
    try {
      return readFileSync(join(dir, 'logs', i === 0 ? 'worker.log' : `worker-${i + 1}.log`), 'utf8').includes(
        'worker: polling',
      );
    } catch {
      return false;
    }
  };
  while (!Array.from({ length: workers }, (_, i) => polling(i)).every(Boolean)) {
    if (Date.now() > deadline) throw new Error('the workers did not start polling within 120 s');
    await sleep(200);
  }
  await sleep(2_000);
}

async function runSize(n: number, o: FleetOptions): Promise<FleetResult> {
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
    log,
  });
  const run = `fleet-${Date.now().toString(36)}-`;
  const apiUrl = (i: number): string => stack.apiUrls[i % stack.apiUrls.length] ?? stack.apiUrl;
  try {
    log(`N=${n}: starting a fresh stack in ${dir} (${o.workers} worker(s), ${o.apis} API(s))`);
    await stack.start();
    log(`N=${n}: stack up: APIs ${stack.apiUrls.join(' ')}, Temporal ${stack.temporalAddress}`);
    await workersPolling(dir, o.workers);
    const workerPids = (): number[] => stack.instances().flatMap((i) => (i.piece === 'worker' ? [i.pid] : []));
    const workerMb = (): number => workerPids().reduce((sum, pid) => sum + memoryMb([pid]), 0);
    const workerMbBefore = workerMb();
    // Each process of the stack, PostgreSQL's as a tree, and this one (the load generator).
    const targets = (): { name: string; pids: number[] }[] => {
      const list = stack.instances().map((i) => ({ name: i.name, pids: [i.pid] }));
      const postgres = stack.postgresPid();
      if (postgres !== undefined) list.push({ name: 'postgres', pids: tree(postgres) });
      list.push({ name: 'bench', pids: [process.pid] });
      return list;
    };

    // 1. Create.
    const ids = Array.from({ length: n }, (_, i) => `${run}${i}`);
    const runtimes: (Runtime | undefined)[] = new Array<Runtime | undefined>(n);
    const createFailures = new Map<string, number>();
    let created = 0;
    const persistence = (): Promise<Map<string, number>> =>
      counterBy([stack.temporalMetricsUrl], 'persistence_requests', 'operation').catch(() => new Map());
    const persistenceAtCreate = await persistence();
    const cpuAtCreate = cpuTicks(targets());
    const createStart = performance.now();
    const rate = (count: number, since: number): number => count / ((performance.now() - since) / 1000);
    await withProgress(
      3_000,
      () => log(`create: ${created}/${n} (${round(rate(created, createStart))}/s)`),
      () =>
        bounded(ids, o.createConcurrency, async (id, i) => {
          const answer = await persistent(`${apiUrl(i)}/workspaces`, { id }, stack.adminToken);
          const token = (answer.body as { auth_token?: unknown } | null)?.auth_token;
          if (answer.status === 201 && typeof token === 'string') {
            runtimes[i] = { id, token };
            created++;
          } else {
            const key = String(answer.status);
            createFailures.set(key, (createFailures.get(key) ?? 0) + 1);
          }
        }),
    );
    const createPerS = rate(created, createStart);
    const createCpu = cpuBetween(cpuAtCreate, cpuTicks(targets()));
    // The server publishes its counters late (at 300 workspaces a read at once saw a third of the
    // starts): wait until they show every start the API acknowledged, for at most 10 s.
    let persistenceAfterCreate = await persistence();
    const starts = (m: Map<string, number>): number => m.get('CreateWorkflowExecution') ?? 0;
    for (let waited = 0; starts(persistenceAfterCreate) - starts(persistenceAtCreate) < created && waited < 10_000;) {
      await sleep(250);
      waited += 250;
      persistenceAfterCreate = await persistence();
    }
    const createPersistence = perItem(persistenceAtCreate, persistenceAfterCreate, created);
    log(
      `create: ${created}/${n} in ${round((performance.now() - createStart) / 1000, 1)} s = ${round(createPerS, 1)} workspaces/s` +
        (createFailures.size > 0 ? `; failed ${[...createFailures].map(([k, v]) => `${k}: ${v}`).join(', ')}` : ''),
    );
    log(`create: CPU ${cpuText(createCpu, created)}`);
    log(`create: the dev server's persistence requests per workspace: ${createPersistence}`);

    // 2. Register each once (push mode, a loopback URL nobody listens on: nothing dispatches to it).
    const fleet = runtimes.filter((r): r is Runtime => r !== undefined);
    let registered = 0;
    const registerFailures = new Map<string, number>();
    const registerStart = performance.now();
    await withProgress(
      3_000,
      () => log(`register: ${registered}/${fleet.length} (${round(rate(registered, registerStart))}/s)`),
      () =>
        bounded(fleet, o.createConcurrency, async (runtime, i) => {
          const body = {
            id: runtime.id,
            url: `http://127.0.0.1:9/${runtime.id}`,
            agent_card: { name: runtime.id },
            delivery_mode: 'push',
          };
          const answer = await persistent(`${apiUrl(i)}/registry/register`, body, runtime.token);
          if (answer.status === 200) registered++;
          else registerFailures.set(String(answer.status), (registerFailures.get(String(answer.status)) ?? 0) + 1);
        }),
    );
    const registerPerS = rate(registered, registerStart);
    log(
      `register: ${registered}/${fleet.length} = ${round(registerPerS, 1)}/s` +
        (registerFailures.size > 0 ? `; failed ${[...registerFailures].map(([k, v]) => `${k}: ${v}`).join(', ')}` : ''),
    );
    // 3. The load: heartbeats from now on, as runtimes send them; measured once the setup has
    // settled (every workspace projected online: its register and reconcile handled), sampled then.
    const sampler = new Sampler(targets);
    log(
      `load: ${fleet.length} workspaces, one beat each per ${o.periodS} s (${round(fleet.length / o.periodS, 1)}/s), ` +
        `at most ${o.inFlight} in flight; warm-up until the setup settled (at most ${o.maxWarmupS} s), then ${o.durationS} s measured`,
    );
    let loadStartedAt = Date.now();
    let workerMbAfterSetup = 0;
    let refusalsAtStart = Promise.resolve(new Map<string, number>());
    let lastSettle = '';
    const {
      warmup,
      measured: load,
      warmupS,
    } = await heartbeatLoad(
      stack.apiUrls,
      fleet,
      o,
      async () => {
        const state = await notOnline(stack.databaseUrl, run);
        if (state.statuses !== lastSettle) log(`settle: ${state.statuses}`);
        lastSettle = state.statuses;
        return state.count === 0;
      },
      o.maxWarmupS,
      () => {
        workerMbAfterSetup = workerMb();
        loadStartedAt = Date.now();
        refusalsAtStart = admissionRefusals(stack.apiUrls);
        sampler.start();
      },
    );
    const loadEndedAt = Date.now();
    const usage = sampler.stop();
    const windowAdmissionRefusals = await Promise.all([refusalsAtStart, admissionRefusals(stack.apiUrls)]).then(
      ([before, after]) => refusedText(after, before),
      (err: unknown) => `? (${String(err)})`,
    );
    const warmupRefused = refusedText(warmup.refused);
    log(
      `warm-up: ${round(warmupS, 1)} s; ${warmup.latencies.length} answered 200 (p99 ${round(percentile(warmup.latencies, 99))} ms), ` +
        `non-200 ${warmupRefused}`,
    );

    // 4. What the projection says, once its writes have landed (they follow the transitions).
    let settled = await notOnline(stack.databaseUrl, run);
    for (let waited = 0; settled.count > 0 && waited < 30_000; waited += 1_000) {
      if (waited % 5_000 === 0) log(`projection: ${settled.statuses}; waiting for its writes (up to 30 s)`);
      await sleep(1_000);
      settled = await notOnline(stack.databaseUrl, run);
    }
    if (settled.count > 0) await explainNotOnline(stack, run);
    const misses = await historySample(stack, fleet, 20).catch((err: unknown) => `? (${String(err)})`);
    const seconds = load.elapsedMs / 1000;
    const result: FleetResult = {
      workspaces: n,
      created,
      createPerS,
      createCpu,
      createPersistence,
      registered,
      registerPerS,
      nominalPerS: fleet.length / o.periodS,
      offeredPerS: load.sent / seconds,
      acceptedPerS: load.latencies.length / seconds,
      p50: percentile(load.latencies, 50),
      p99: percentile(load.latencies, 99),
      refused: load.refused,
      retried: load.retried,
      late: load.late,
      maxLagMs: load.maxLagMs,
      notOnline: settled.count,
      statuses: settled.statuses,
      workerMbBefore,
      workerMbAfterSetup,
      warmupS,
      warmupNon200: warmupRefused,
      windowAdmissionRefusals,
      historySample: misses,
      usage,
    };
    report(result);
    const crashes = stack.crashes();
    if (crashes.length > 0) log(`N=${n}: !! processes exited on their own: ${crashes.map((c) => c.piece).join(', ')}`);
    if (profile !== undefined) {
      // When the load ran, against when the processes were told to stop (a profile ends then):
      // bench/cpuprofile.ts counts the samples of the load only.
      const starts = Object.fromEntries(stack.instances().map((i) => [String(i.pid), processStartMs(i.pid)]));
      const window = { loadStartedAt, loadEndedAt, starts };
      writeFileSync(join(profile, 'window.json'), `${JSON.stringify(window)}\n`);
    }
    return result;
  } finally {
    log(`N=${n}: stopping the stack`);
    await stack.stop().catch((err: unknown) => log(`stopping the stack: ${String(err)}`));
    if (o.keep) log(`kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

function usageText(usage: Usage[], piece: string): string {
  return usage
    .filter((u) => u.name === piece || u.name.startsWith(`${piece}-`))
    .map((u) => `${round(u.peakMb)} MB / ${round(u.meanCpu)}%`)
    .join(', ');
}

function report(r: FleetResult): void {
  const perWorkflowKb = ((r.workerMbAfterSetup - r.workerMbBefore) * 1024) / Math.max(1, r.registered);
  console.log(
    [
      `--- N=${r.workspaces}`,
      `created ${r.created} at ${round(r.createPerS, 1)}/s; registered ${r.registered} at ${round(r.registerPerS, 1)}/s`,
      `CPU while creating: ${cpuText(r.createCpu, r.created)}`,
      `the dev server's persistence requests per workspace created: ${r.createPersistence}`,
      `heartbeats: nominal ${round(r.nominalPerS, 1)}/s, offered ${round(r.offeredPerS, 1)}/s, accepted ${round(r.acceptedPerS, 1)}/s`,
      `accepted latency p50 ${round(r.p50, 1)} ms, p99 ${round(r.p99, 1)} ms; non-200 ${refusedText(r.refused)}; ` +
        `retried after Retry-After ${r.retried}; sent > 1 s late ${r.late} (max lag ${round(r.maxLagMs)} ms)`,
      `the APIs' admission refusals in the window: ${r.windowAdmissionRefusals}`,
      `not online at the end: ${r.notOnline} (projection: ${r.statuses})`,
      `warm-up (heartbeats from the last register until the setup settled, not measured): ${round(r.warmupS, 1)} s, non-200 ${r.warmupNon200}`,
      `worker RSS before the fleet ${round(r.workerMbBefore)} MB, after create+register+settle ${round(r.workerMbAfterSetup)} MB ` +
        `(~${round(perWorkflowKb)} KB per registered workspace, all workers together)`,
      `workflow tasks ${r.historySample}`,
      ...r.usage.map((u) => `  ${u.name.padEnd(10)} peak ${round(u.peakMb)} MB, mean CPU ${round(u.meanCpu)}%`),
    ].join('\n'),
  );
}

export function table(results: FleetResult[]): string {
  return [
    '| workspaces | create/s | hb/s nominal | offered | accepted | p50 ms | p99 ms | non-200 | not online | worker(s) peak RSS / CPU | API(s) | dev server | postgres |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | --- | --- | --- |',
    ...results.map(
      (r) =>
        `| ${r.workspaces} | ${round(r.createPerS, 1)} | ${round(r.nominalPerS, 1)} | ${round(r.offeredPerS, 1)} | ` +
        `${round(r.acceptedPerS, 1)} | ${round(r.p50, 1)} | ${round(r.p99, 1)} | ${refusedText(r.refused)} | ${r.notOnline} | ` +
        `${usageText(r.usage, 'worker')} | ${usageText(r.usage, 'api')} | ${usageText(r.usage, 'temporal')} | ` +
        `${usageText(r.usage, 'postgres')} |`,
    ),
  ].join('\n');
}

function parseOptions(): FleetOptions {
  const { values } = parseArgs({
    options: {
      workspaces: { type: 'string', default: '1000' },
      duration: { type: 'string', default: '60' },
      period: { type: 'string', default: '30' },
      workers: { type: 'string', default: '1' },
      apis: { type: 'string', default: '1' },
      'create-concurrency': { type: 'string', default: '32' },
      'in-flight': { type: 'string', default: '256' },
      'max-warmup': { type: 'string', default: '600' },
      profile: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'dev-server-config': { type: 'string', multiple: true, default: [] },
      'dev-server-pragma': { type: 'string', multiple: true, default: [] },
    },
  });
  const keyValue = (flag: string, pair: string): string => {
    if (!/^[\w.]+=\S+$/.test(pair)) throw new Error(`--${flag} takes KEY=VALUE, got ${pair}`);
    return pair;
  };
  const positive = (flag: string, text: string, integer = true): number => {
    const value = Number(text);
    if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value)))
      throw new Error(`--${flag} must be a positive ${integer ? 'integer' : 'number'}, got ${text}`);
    return value;
  };
  return {
    sizes: values.workspaces.split(',').map((size) => positive('workspaces', size)),
    durationS: positive('duration', values.duration, false),
    periodS: positive('period', values.period, false),
    workers: positive('workers', values.workers),
    apis: positive('apis', values.apis),
    createConcurrency: positive('create-concurrency', values['create-concurrency']),
    inFlight: positive('in-flight', values['in-flight']),
    maxWarmupS: positive('max-warmup', values['max-warmup'], false),
    profileDir: values.profile,
    keep: values.keep,
    devServerArgs: [
      ...values['dev-server-config'].flatMap((pair) => ['--dynamic-config-value', keyValue('dev-server-config', pair)]),
      ...values['dev-server-pragma'].flatMap((pair) => ['--sqlite-pragma', keyValue('dev-server-pragma', pair)]),
    ],
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  let options: FleetOptions;
  try {
    options = parseOptions();
  } catch (err) {
    console.error(`bench:fleet: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(2);
  }
  log(
    `bench:fleet: sizes ${options.sizes.join(', ')}; a fresh stack per size; the worker caches ` +
      `${process.env['WL_WORKER_MAX_CACHED_WORKFLOWS'] ?? '10000 (its default)'} workflows` +
      (options.devServerArgs.length > 0 ? `; the dev server with ${options.devServerArgs.join(' ')} too` : ''),
  );
  const results: FleetResult[] = [];
  for (const size of options.sizes) results.push(await runSize(size, options));
  console.log(
    `\n${options.workers} worker(s), ${options.apis} API(s), period ${options.periodS} s, ` +
      `${options.durationS} s of load per size; peak RSS (PSS summed for the postgres tree) / mean CPU% ` +
      `(100% = one core)\n\n${table(results)}\n`,
  );
  process.exit(0);
}
