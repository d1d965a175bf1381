/** What one fleet size measured (bench/fleet-run.ts), and how the fleet bench prints it. */
import type { DeadBoxes } from './fleet-dead.js';
import type { CpuUse, Usage } from './harness/processes.js';
import { countsText, round } from './harness/stats.js';

export interface FleetResult {
  workspaces: number;
  created: number;
  createPerS: number;
  /** From the first create to the last, s. */
  createS: number;
  /** CPU each process used while the workspaces were created, core-seconds. */
  createCpu: CpuUse[];
  /** The dev server's persistence requests per workspace created, by operation, most first. */
  createPersistence: string;
  registered: number;
  registerPerS: number;
  /** Each runtime registered and beat as soon as its workspace was created. */
  atOnce: boolean;
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
  /** Every worker's peak resident memory over the whole run (create, setup, window), summed. */
  workerPeakRunMb: number;
  /**
   * Heartbeats ran from the last register (`atOnce`: from the first create) until the setup
   * settled (every workspace online); not measured.
   */
  warmupS: number;
  /** The setup settled before `--max-warmup`. */
  settled: boolean;
  warmupNon200: string;
  /** The APIs' 429s in the measured window, by why admission refused them (`api_admission_refused`). */
  windowAdmissionRefusals: string;
  /** Workflow tasks the dev server completed in the window (its `service_requests` of RespondWorkflowTaskCompleted). */
  windowWorkflowTasks: number;
  /** Signals it received in the window. */
  windowSignals: number;
  windowS: number;
  /** The load generator's (this process's) event loop delay in the window: over a few ms, it sends late. */
  loadLoopDelayMs: { p99: number; max: number };
  /** Dead boxes after the window; undefined when none were asked for. */
  dead: DeadBoxes | undefined;
  historySample: string;
  usage: Usage[];
}

/** `temporal 41.2 s (4.1 ms each), ...`: core-seconds per process, and per item of the phase. */
export function cpuText(use: CpuUse[], items: number): string {
  const total = use.reduce((sum, u) => sum + u.seconds, 0);
  return [...use, { name: 'all', seconds: total }]
    .map((u) => `${u.name} ${round(u.seconds, 1)} s (${round((u.seconds * 1000) / Math.max(1, items), 2)} ms each)`)
    .join(', ');
}

function usageText(usage: Usage[], piece: string): string {
  return usage
    .filter((u) => u.name === piece || u.name.startsWith(`${piece}-`))
    .map((u) => `${round(u.peakMb)} MB / ${round(u.meanCpu)}%`)
    .join(', ');
}

/** How long the setup took to settle, or that it did not. */
function settledText(r: FleetResult): string {
  return r.settled ? `${round(r.warmupS, 1)} s` : `not within ${round(r.warmupS, 1)} s`;
}

/** One fleet size, as lines. */
export function report(r: FleetResult): string {
  const perWorkflowKb = ((r.workerMbAfterSetup - r.workerMbBefore) * 1024) / Math.max(1, r.registered);
  return [
    `--- N=${r.workspaces}`,
    `created ${r.created} at ${round(r.createPerS, 1)}/s; registered ${r.registered} at ${round(r.registerPerS, 1)}/s`,
    `CPU while creating: ${cpuText(r.createCpu, r.created)}`,
    `the dev server's persistence requests per workspace created: ${r.createPersistence}`,
    `heartbeats: nominal ${round(r.nominalPerS, 1)}/s, offered ${round(r.offeredPerS, 1)}/s, accepted ${round(r.acceptedPerS, 1)}/s`,
    `accepted latency p50 ${round(r.p50, 1)} ms, p99 ${round(r.p99, 1)} ms; non-200 ${countsText(r.refused)}; ` +
      `retried after Retry-After ${r.retried}; sent > 1 s late ${r.late} (max lag ${round(r.maxLagMs)} ms)`,
    `the APIs' admission refusals in the window: ${r.windowAdmissionRefusals}`,
    `not online at the end: ${r.notOnline} (projection: ${r.statuses})`,
    r.atOnce
      ? `created and beaten at once: every workspace online ${settledText(r)} after the first create ` +
        `(creation took ${round(r.createS, 1)} s); heartbeats until then non-200 ${r.warmupNon200}`
      : `warm-up (heartbeats from the last register until the setup settled, not measured): ${settledText(r)}, non-200 ${r.warmupNon200}`,
    `worker RSS before the fleet ${round(r.workerMbBefore)} MB, after create+register+settle ${round(r.workerMbAfterSetup)} MB ` +
      `(~${round(perWorkflowKb)} KB per registered workspace, all workers together); peak over the run ${round(r.workerPeakRunMb)} MB`,
    `the dev server in the window: ${round(r.windowWorkflowTasks)} workflow tasks completed ` +
      `(${round(r.windowWorkflowTasks / r.windowS, 2)}/s), ${round(r.windowSignals)} signals received`,
    `the load generator (bench) in the window: event loop delay p99 ${round(r.loadLoopDelayMs.p99, 1)} ms, max ${round(r.loadLoopDelayMs.max, 1)} ms; its CPU below`,
    r.dead === undefined
      ? 'dead boxes: not measured (--dead 0)'
      : `dead boxes: ${r.dead.silenced} runtimes stopped beating, ${r.dead.offline} went offline within ${round(r.dead.waitedS)} s; ` +
        `from the last acknowledged heartbeat to the verdict p50 ${round(r.dead.p50Ms / 1000, 1)} s, max ${round(r.dead.maxMs / 1000, 1)} s ` +
        `(statuses at the end: ${r.dead.statuses})`,
    `workflow tasks ${r.historySample}`,
    ...r.usage.map((u) => `  ${u.name.padEnd(10)} peak ${round(u.peakMb)} MB, mean CPU ${round(u.meanCpu)}%`),
  ].join('\n');
}

/** Every fleet size, one row each, as a Markdown table. */
export function table(results: FleetResult[]): string {
  return [
    '| workspaces | create/s | settled s | hb/s nominal | offered | accepted | p50 ms | p99 ms | non-200 | not online | workflow tasks/s | dead → verdict p50 / max s | worker(s) peak RSS / CPU | API(s) | dev server | postgres | bench |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- | --- | --- | --- | --- |',
    ...results.map(
      (r) =>
        `| ${r.workspaces} | ${round(r.createPerS, 1)} | ${settledText(r)} | ${round(r.nominalPerS, 1)} | ${round(r.offeredPerS, 1)} | ` +
        `${round(r.acceptedPerS, 1)} | ${round(r.p50, 1)} | ${round(r.p99, 1)} | ${countsText(r.refused)} | ${r.notOnline} | ` +
        `${round(r.windowWorkflowTasks / r.windowS, 2)} | ` +
        `${r.dead === undefined ? '-' : `${round(r.dead.p50Ms / 1000, 1)} / ${round(r.dead.maxMs / 1000, 1)}`} | ` +
        `${usageText(r.usage, 'worker')} | ${usageText(r.usage, 'api')} | ${usageText(r.usage, 'temporal')} | ` +
        `${usageText(r.usage, 'postgres')} | ${usageText(r.usage, 'bench')} |`,
    ),
  ].join('\n');
}
