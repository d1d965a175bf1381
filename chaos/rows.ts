/**
 * The faults, one row each: inject it into the running stack, count what the API acknowledged
 * and what the workflows recorded, and say whether the expectation held.
 */
import type { Client, WorkflowHandle } from '@temporalio/client';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LocalBoxDriver, processAlive, processRunning } from '../activities/box/local.js';
import { Store } from '../db/store.js';
import { stateQuery, workspaceWorkflowId } from '../workflows/definitions.js';
import type { LifecycleConfig } from '../workflows/config.js';
import type { WorkspaceState } from '../workflows/state-machine.js';
import { idleHeartbeat } from '../workflows/payloads.js';
import {
  HeartbeatLoad,
  byStatus,
  call,
  createWorkspaces as create,
  type Answer,
  type Runtime,
} from '../bench/harness/load.js';
import { admissionRefusals } from '../bench/harness/metrics.js';
import { rssMb } from '../bench/harness/processes.js';
import type { Stack } from '../bench/harness/stack.js';
import { countsText, percentile } from '../bench/harness/stats.js';

export interface Row {
  fault: string;
  figures: string;
  expected: string;
  held: boolean;
}

export interface RowContext {
  stack: Stack;
  log: (line: string) => void;
}

export const ms = (value: number): string => `${Math.round(value)} ms`;
export const s = (value: number): string => `${(value / 1000).toFixed(1)} s`;
let sequence = 0;

// --- shared steps ------------------------------------------------------------------------------

export async function admin(stack: Stack, method: string, path: string, body?: unknown) {
  return call(`${stack.apiUrl}${path}`, method, body, stack.adminToken);
}

/** The workspaces the rows created and did not remove yet (removeRowWorkspaces). */
const created: string[] = [];

/**
 * Removes the workspaces the rows created since the last call: each row leaves the fleet as it
 * found it, so a row's silent workspaces do not make a later row's fleet mostly silent (which the
 * fleet liveness controller rightly takes for a disruption, declaring nobody).
 */
export async function removeRowWorkspaces(stack: Stack): Promise<void> {
  const ids = created.splice(0);
  for (const id of ids) await admin(stack, 'DELETE', `/workspaces/${id}`).catch(() => null);
}

/** Creates `n` workspaces through the API; each comes back with its token. */
export async function createWorkspaces(
  stack: Stack,
  n: number,
  plugins: { name: string; source: string }[] = [],
): Promise<Runtime[]> {
  const run = `${process.pid.toString(36)}${(sequence++).toString(36)}`;
  const { runtimes, failures } = await create({
    apiUrls: [stack.apiUrl],
    adminToken: stack.adminToken,
    ids: Array.from({ length: n }, (_, i) => `chaos-${run}-${i}`),
    plugins,
    concurrency: 20,
    // 429: refused as overloaded, nothing was done. Anything else is the row's failure.
    retryOn: [429],
  });
  created.push(...runtimes.map((runtime) => runtime.id));
  const [failed] = failures;
  if (failed !== undefined) throw new Error(`creating ${failed.id}: ${failed.status} ${JSON.stringify(failed.body)}`);
  return runtimes;
}

/** The runtime registers in poll mode; anything but 200 is the row's failure. */
export async function register(stack: Stack, runtime: Runtime): Promise<void> {
  const answer = await call(
    `${stack.apiUrl}/registry/register`,
    'POST',
    { id: runtime.id, delivery_mode: 'poll', agent_card: { name: 'chaos' } },
    runtime.token,
  );
  if (answer.status !== 200) throw new Error(`register: ${answer.status} ${JSON.stringify(answer.body)}`);
}

/** An open-loop heartbeat load on the stack's API (the offered rate holds, whatever the answers). */
export function heartbeats(stack: Stack, runtimes: Runtime[], rate: number): HeartbeatLoad {
  return new HeartbeatLoad({ apiUrls: [stack.apiUrl], runtimes, rate, maxInFlight: 2_000, pace: 'open' });
}

/** A fleet a row breaks something under: this many workspaces beating at this rate. */
export interface BeatingFleetOptions {
  workspaces: number;
  rate: number;
}

/** The row's workspaces, created, their heartbeats running for 4 s before the fault. */
async function beatingFleet(stack: Stack, o: BeatingFleetOptions): Promise<HeartbeatLoad> {
  const runtimes = await createWorkspaces(stack, o.workspaces);
  const load = heartbeats(stack, runtimes, o.rate);
  load.start();
  await sleep(4_000);
  return load;
}

export function handle(client: Client, id: string): WorkflowHandle {
  return client.workflow.getHandle(workspaceWorkflowId(id));
}

export async function state(stack: Stack, id: string): Promise<WorkspaceState> {
  return handle(await stack.temporal(), id).query(stateQuery);
}

export async function waitFor<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${s(timeoutMs)} waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** Waits until every one of the workspaces is online. */
export async function untilOnline(stack: Stack, runtimes: readonly Runtime[], timeoutMs = 60_000): Promise<void> {
  await waitFor(`${runtimes.length} workspaces online`, timeoutMs, async () => {
    const states = await Promise.all(runtimes.map((runtime) => state(stack, runtime.id)));
    return states.every((st) => st.status === 'online') ? true : undefined;
  });
}

/** What a row runs the stack with: lifecycle overrides for the workflows it starts, the workers' environment. */
export interface RowSettings {
  /** WL_LIFECYCLE_CONFIG of the API, which starts the workflows (the config travels in their input). */
  lifecycle?: Partial<LifecycleConfig>;
  /** The workers' extra environment (e.g. the fleet liveness controller's settings). */
  worker?: Record<string, string>;
}

/**
 * Runs the row with the API (and the workers, when it sets theirs) restarted with its settings, and
 * restarts them with the stack's own afterwards, so the next row finds the stack as it was.
 */
export async function withRowSettings<T>(stack: Stack, settings: RowSettings, work: () => Promise<T>): Promise<T> {
  const lifecycle: Record<string, string> =
    settings.lifecycle === undefined ? {} : { WL_LIFECYCLE_CONFIG: JSON.stringify(settings.lifecycle) };
  await stack.restartApi(lifecycle);
  if (settings.worker !== undefined) await stack.restartWorker(settings.worker);
  try {
    return await work();
  } finally {
    if (settings.worker !== undefined) await stack.restartWorker({});
    await stack.restartApi({});
  }
}

/**
 * Acknowledged against recorded: a heartbeat answered 200 must be counted in the heartbeat
 * ledger (one the workflow wanted is recorded once it has it, before the answer). The count may
 * be higher (a call whose answer was lost was recorded all the same), never lower.
 */
async function lostHeartbeats(
  stack: Stack,
  ackedById: Map<string, number>,
): Promise<{ acked: number; recorded: number; lost: number }> {
  let acked = 0;
  let recorded = 0;
  let lost = 0;
  const store = Store.connect(stack.databaseUrl);
  try {
    for (const [id, count] of ackedById) {
      const { beats: seen } = await store.heartbeats.read(id);
      acked += count;
      recorded += seen;
      lost += Math.max(0, count - seen);
    }
  } finally {
    await store.close();
  }
  return { acked, recorded, lost };
}

export function newCrashes(stack: Stack, before: number): string[] {
  return stack.exits
    .slice(before)
    .filter((exit) => !exit.expected)
    .map((exit) => `${exit.piece} ${exit.signal ?? `exit ${exit.code}`}`);
}

/** The first acknowledged heartbeat sent at or after `from` ms: when service was back. */
function firstOkAfter(answers: Answer[], from: number): number | undefined {
  return answers.filter((a) => a.status === 200 && a.at >= from).sort((a, b) => a.at - b.at)[0]?.at;
}

// --- rows --------------------------------------------------------------------------------------

export interface PostgresRestartOptions extends BeatingFleetOptions {
  outageMs: number;
}

/** PostgreSQL stopped (fast shutdown) and started again, under heartbeat load. */
export async function postgresRestart(ctx: RowContext, o: PostgresRestartOptions): Promise<Row> {
  const { stack, log } = ctx;
  const exitsBefore = stack.exits.length;
  const load = await beatingFleet(stack, o);
  log(`postgres: stopping it for ${s(o.outageMs)} under ${o.rate} heartbeats/s`);
  const down = load.now();
  stack.stopPostgres();
  await sleep(2_000);
  const ready = await call(`${stack.apiUrl}/readyz`, 'GET', undefined);
  const readySaid = JSON.stringify(ready.body);
  await sleep(o.outageMs - 2_000);
  const up = load.now();
  stack.startPostgres();
  log('postgres: started again');
  // The load runs on until service is back (a heartbeat sent after the start acknowledged) and
  // 2 s past it, 8 s at most: heartbeats acknowledged after the outage are counted too.
  const tailEnd = up + 8_000;
  while (load.now() < tailEnd && firstOkAfter(load.answers, up) === undefined) await sleep(100);
  await sleep(Math.max(0, Math.min(2_000, tailEnd - load.now())));
  await load.stop();

  // Answered while the server was down: a heartbeat sent late in the outage and answered after
  // the start may be recorded (200), rightly, and is not one the outage refused.
  const during = load.between(down + 500, up).filter((answer) => answer.at + answer.ms < up);
  const refused = during.filter((a) => a.status === 503 || a.status === 429);
  const resumedAfter = (firstOkAfter(load.answers, up) ?? Infinity) - up;
  const { acked, recorded, lost } = await lostHeartbeats(stack, load.acked());
  const crashes = newCrashes(stack, exitsBefore);
  const refusalP50 = percentile(
    refused.map((a) => a.ms),
    50,
  );
  const held =
    crashes.length === 0 &&
    during.length > 0 &&
    refused.length === during.length &&
    refusalP50 < 100 &&
    ready.status === 503 &&
    /"database":"unavailable/.test(readySaid) &&
    resumedAfter < 5_000 &&
    lost === 0;
  return {
    fault: `PostgreSQL stopped ${s(o.outageMs)} (fast shutdown), ${o.rate} heartbeats/s over ${o.workspaces} workspaces`,
    figures:
      `during the outage ${byStatus(during)} (p50 ${ms(refusalP50)}); readyz ${ready.status} database ` +
      `${(ready.body as { database?: string } | null)?.database?.slice(0, 40) ?? '?'}; service back ${s(resumedAfter)} ` +
      `after the start; acked ${acked}, recorded ${recorded}, lost ${lost}; crashes: ${crashes.join(', ') || 'none'}`,
    expected: 'no process exits; 503 + Retry-After fast (p50 < 100 ms); readyz names the database; back < 5 s; 0 lost',
    held,
  };
}

export interface WorkerKillOptions {
  plugins: number;
  pluginMb: number;
  /** Where in the reconcile to kill the worker. */
  moments: Moment[];
}

export const moments = ['diff', 'stage', 'deliver', 'record', 'restart'] as const;
export type Moment = (typeof moments)[number];

/** Plugin repositories with a large file each, made once per run. */
export function pluginRepos(stack: Stack, count: number, mb: number): { name: string; source: string }[] {
  const root = join(stack.options.dir, 'repos');
  return Array.from({ length: count }, (_, i) => {
    const name = `chaos-plugin-${i + 1}`;
    const dir = join(root, `${name}.git`);
    if (!existsSync(dir)) {
      mkdirSync(dir, { recursive: true });
      const git = (...args: string[]): void => {
        // Uncompressed: the payload is random bytes, which zlib only spends CPU on.
        execFileSync('git', [
          '-c',
          'core.compression=0',
          '-c',
          'user.email=chaos@workspace-lifecycle',
          '-c',
          'user.name=chaos',
          '-C',
          dir,
          ...args,
        ]);
      };
      git('init', '-q', '-b', 'main');
      writeFileSync(join(dir, 'plugin.yaml'), `name: ${name}\nversion: 1.0.${i}\n`);
      writeFileSync(join(dir, 'payload.bin'), randomBytes(mb * 1024 * 1024));
      git('add', '.');
      git('commit', '-q', '-m', name);
    }
    return { name, source: `git+file://${dir}#main` };
  });
}

/** The box's event log: what the driver actually did. */
export function boxEvents(stack: Stack, id: string): string[] {
  const file = join(stack.boxesDir, id, 'box-events.log');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((line) => line.split(' ').slice(1).join(' '));
}

/** The worker SIGKILLed at one moment of a reconcile, then started again 1 s later. */
export async function workerKill(ctx: RowContext, o: WorkerKillOptions, moment: Moment): Promise<Row> {
  const { stack, log } = ctx;
  const exitsBefore = stack.exits.length;
  const plugins = pluginRepos(stack, o.plugins, o.pluginMb);
  const [runtime] = await createWorkspaces(stack, 1, plugins);
  if (runtime === undefined) throw new Error('no workspace');
  const driver = new LocalBoxDriver({ root: stack.boxesDir, runtimeCommand: stack.options.runtimeCommand });
  await driver.createBox(runtime.id);
  await driver.startRuntime(runtime.id);
  const client = await stack.temporal();
  const store = Store.connect(stack.databaseUrl);
  try {
    await register(stack, runtime);

    const activityFor: Partial<Record<Moment, string>> = {
      stage: 'stagePlugin',
      deliver: 'deliverPlugin',
      restart: 'restartBox',
    };
    const wanted = activityFor[moment];
    let seen = 'the register was acknowledged';
    if (wanted !== undefined) {
      seen = await waitFor(
        `a started ${wanted}`,
        120_000,
        async () => {
          const { raw } = await handle(client, runtime.id).describe();
          const started = (raw.pendingActivities ?? []).filter(
            (a) => a.activityType?.name === wanted && Number(a.state) === 2, // PENDING_ACTIVITY_STATE_STARTED
          );
          return started.length > 0 ? `${started.length} ${wanted} started` : undefined;
        },
        20,
      );
    } else if (moment === 'record') {
      // Rows are written within milliseconds of each other: the kill lands between two of them,
      // or (said so in the figures) just after the last.
      seen = await waitFor(
        'a first tracking row',
        120_000,
        async () => {
          const rows = (await store.trackingRows.list(runtime.id)).length;
          return rows > 0 ? `${rows}/${o.plugins} tracking rows written` : undefined;
        },
        5,
      );
    }
    await stack.kill('worker');
    log(`worker-kill (${moment}): SIGKILL with ${seen}`);
    await sleep(1_000);
    stack.startWorker();
    const back = Date.now();

    const settled = await waitFor('the reconcile to converge', 180_000, async () => {
      const st = await state(stack, runtime.id);
      const rows = (await store.trackingRows.list(runtime.id)).length;
      return !st.reconcile.running && !st.restart.inFlight && st.restart.count >= 1 && rows === o.plugins
        ? st
        : undefined;
    });
    const convergedMs = Date.now() - back;
    await sleep(2_000); // anything still retrying would show now
    const events = boxEvents(stack, runtime.id);
    const deliveries = new Map<string, number>();
    for (const event of events.filter((e) => e.startsWith('deliver ')))
      deliveries.set(event, (deliveries.get(event) ?? 0) + 1);
    const maxDeliveries = Math.max(0, ...deliveries.values());
    const restarts = events.filter((e) => e.startsWith('restart ')).length;
    const finalState = await state(stack, runtime.id);
    const pid = await driver.runtimePid(runtime.id);
    const running = pid !== null && (await processRunning(pid));
    const crashes = newCrashes(stack, exitsBefore);
    const held =
      crashes.length === 0 &&
      convergedMs < 60_000 &&
      maxDeliveries <= 1 &&
      restarts === 1 &&
      finalState.restart.count === 1 &&
      running &&
      settled.reconcile.lastOutcome === 'succeeded';
    await driver.stopRuntime(runtime.id);
    return {
      fault: `worker SIGKILLed during a reconcile of ${o.plugins} plugins x ${o.pluginMb} MB: ${moment} (${seen})`,
      figures:
        `converged ${s(convergedMs)} after the worker was back; ${deliveries.size} revisions delivered, at most ` +
        `${maxDeliveries}x each; reconcile ${settled.reconcile.lastOutcome ?? '?'}; box restarts ${restarts}, ` +
        `workflow restarts ${finalState.restart.count}; ` +
        `box runtime ${running ? 'running' : 'not running'} after the restart`,
      expected:
        'converges < 60 s after the worker is back; each revision delivered at most once; exactly 1 restart, its runtime running',
      held,
    };
  } finally {
    await store.close();
  }
}

export interface TemporalRestartOptions {
  /** The liveness TTL the row's workspaces run with (a durable timer that must still fire). */
  ttlMs: number;
  downMs: number;
  /** What runs Temporal, for the row's text: the dev server, or the Temporal server of the cluster shape. */
  server: string;
}

/**
 * The dev server SIGKILLed inside a restart's settle window and started again on the same
 * database file: the timers still fire, the verdicts follow the rules, nothing acknowledged is lost.
 */
export async function temporalRestart(ctx: RowContext, o: TemporalRestartOptions): Promise<Row> {
  // This row's workflows run with a short liveness TTL, so its timer fires within the row.
  return withRowSettings(ctx.stack, { lifecycle: { livenessTtlMs: o.ttlMs } }, () => temporalRestartRow(ctx, o));
}

async function temporalRestartRow(ctx: RowContext, o: TemporalRestartOptions): Promise<Row> {
  const { stack, log } = ctx;
  const exitsBefore = stack.exits.length;
  const [settling, silent] = await createWorkspaces(stack, 2);
  if (settling === undefined || silent === undefined) throw new Error('no workspaces');
  const driver = new LocalBoxDriver({ root: stack.boxesDir, runtimeCommand: stack.options.runtimeCommand });
  await driver.createBox(settling.id);
  await driver.startRuntime(settling.id);
  const acked = new Map<string, number>();
  const beat = async (runtime: Runtime): Promise<number> => {
    const answer = await call(
      `${stack.apiUrl}/registry/heartbeat`,
      'POST',
      idleHeartbeat(runtime.id, 60),
      runtime.token,
    );
    if (answer.status === 200) acked.set(runtime.id, (acked.get(runtime.id) ?? 0) + 1);
    return answer.status;
  };
  for (const runtime of [settling, silent]) {
    await call(
      `${stack.apiUrl}/registry/register`,
      'POST',
      { id: runtime.id, delivery_mode: 'poll', agent_card: { name: 'chaos' } },
      runtime.token,
    );
    for (let i = 0; i < 5; i++) await beat(runtime);
  }

  const restart = await admin(stack, 'POST', `/workspaces/${settling.id}/restart`, { reason: 'chaos' });
  if (restart.status !== 200) throw new Error(`restart: ${restart.status}`);
  const restarted = await waitFor('the operator restart', 30_000, async () => {
    const st = await state(stack, settling.id);
    return st.restart.count === 1 && !st.restart.inFlight ? st : undefined;
  });
  const settleUntil = Date.parse(restarted.restart.settleUntil ?? '');
  if ((await beat(silent)) !== 200) throw new Error('last heartbeat refused');

  await sleep(1_000);
  log(`temporal-restart: SIGKILL the ${o.server} inside the settle window (${s(settleUntil - Date.now())} left)`);
  await stack.kill('temporal');
  const killedAt = Date.now();
  await sleep(500);
  // A heartbeat that must reach the workflow (it degrades the workspace): refused while Temporal
  // is down. (One that changes nothing is recorded in the heartbeat ledger and answered 200.) The
  // ledger has seen it, so the silent workspace's TTL counts from it.
  const lastBeat = Date.now();
  const whileDown = await call(
    `${stack.apiUrl}/registry/heartbeat`,
    'POST',
    { ...idleHeartbeat(silent.id, 60), error_rate: 0.9 },
    silent.token,
  );
  const readyDown = await call(`${stack.apiUrl}/readyz`, 'GET', undefined);
  await sleep(Math.max(0, o.downMs - (Date.now() - killedAt)));
  await stack.startTemporal();
  const serverBack = Date.now();
  log(`temporal-restart: ${o.server} back after ${s(serverBack - killedAt)}`);
  // Service is back when a call through the API reaches a workflow again.
  await waitFor('the API to reach Temporal again', 30_000, async () => {
    const answer = await admin(stack, 'GET', `/workspaces/${settling.id}`);
    return answer.status === 200 ? true : undefined;
  });
  const resumedMs = Date.now() - serverBack;

  // The box dies inside the settle window: no heartbeat since the restart → a strike, not dead.
  const pid = await driver.runtimePid(settling.id);
  if (pid !== null && processAlive(pid)) process.kill(pid, 'SIGKILL');
  const inWindow = await admin(stack, 'POST', `/workspaces/${settling.id}/dispatch-failed`, { caller: 'chaos' });
  const inWindowVerdict = (inWindow.body as { verdict?: string } | null)?.verdict ?? `${inWindow.status}`;
  const inWindowAt = Date.now();
  // After the window: not running, no recent heartbeat → dead, restarted once more.
  await sleep(Math.max(0, settleUntil + 1_000 - Date.now()));
  const afterWindow = await admin(stack, 'POST', `/workspaces/${settling.id}/dispatch-failed`, { caller: 'chaos' });
  const afterVerdict = (afterWindow.body as { verdict?: string } | null)?.verdict ?? `${afterWindow.status}`;
  const after = await waitFor('the second restart', 60_000, async () => {
    const st = await state(stack, settling.id);
    return st.restart.count >= 2 && !st.restart.inFlight ? st : undefined;
  });
  // The silent workspace: its liveness timer, armed before the kill, fires after the restart.
  const offline = await waitFor('the silent workspace to go offline', o.ttlMs + 60_000, async () => {
    const st = await state(stack, silent.id);
    return st.status === 'offline' ? st : undefined;
  });
  const offlineAfter = Date.parse(offline.statusSince) - lastBeat;
  const { acked: ackedTotal, recorded, lost } = await lostHeartbeats(stack, acked);
  const crashes = newCrashes(stack, exitsBefore);
  await driver.stopRuntime(settling.id);
  const held =
    crashes.length === 0 &&
    whileDown.status === 503 &&
    whileDown.ms < 1_000 &&
    readyDown.status === 503 &&
    resumedMs < 5_000 &&
    inWindowAt < settleUntil &&
    inWindowVerdict === 'queued' &&
    afterVerdict === 'dead' &&
    after.restart.count === 2 &&
    offlineAfter >= o.ttlMs - 1_000 &&
    offlineAfter < o.ttlMs + 10_000 &&
    lost === 0;
  return {
    fault: `${o.server} SIGKILLed inside a settle window, started again ${s(o.downMs)} later on the same database`,
    figures:
      `while down: a degrading heartbeat ${whileDown.status} in ${ms(whileDown.ms)}, readyz ${readyDown.status}; API reached ` +
      `Temporal ${s(resumedMs)} after the server was back; dead box in the window: ${inWindowVerdict}, after it: ` +
      `${afterVerdict}; restarts ${after.restart.count}; silent workspace offline ${s(offlineAfter)} after its last ` +
      `heartbeat (TTL ${s(o.ttlMs)}); acked ${ackedTotal}, recorded ${recorded}, lost ${lost}`,
    expected:
      '503 < 1 s while down; back < 5 s; in the window queued, after it dead, exactly 2 restarts; TTL timer fires on time; 0 lost',
    held,
  };
}

/** The API SIGKILLed under load and started again. */
export async function apiRestart(ctx: RowContext, o: BeatingFleetOptions): Promise<Row> {
  const { stack, log } = ctx;
  const exitsBefore = stack.exits.length;
  const load = await beatingFleet(stack, o);
  log('api-restart: SIGKILL the API under load');
  await stack.kill('api');
  const killed = load.now();
  await sleep(500);
  const starting = load.now();
  await stack.startApi();
  const listening = load.now();
  await sleep(5_000);
  await load.stop();
  const resumedAfter = (firstOkAfter(load.answers, starting) ?? Infinity) - starting;
  const { acked, recorded, lost } = await lostHeartbeats(stack, load.acked());
  const crashes = newCrashes(stack, exitsBefore);
  const held = crashes.length === 0 && resumedAfter < 5_000 && lost === 0;
  return {
    fault: `API SIGKILLed under ${o.rate} heartbeats/s over ${o.workspaces} workspaces, started again`,
    figures:
      `while down ${byStatus(load.between(killed, listening))}; the new API listened ${s(listening - starting)} ` +
      `after its start, served ${s(resumedAfter)} after it; acked ${acked}, recorded ${recorded}, lost ${lost}`,
    expected: 'served again < 5 s after the API starts; 0 acknowledged heartbeats lost',
    held,
  };
}

export interface OneWorkerKillOptions {
  workspaces: number;
}

/**
 * One of two workers SIGKILLed (the cluster shape): each workspace's next signal (a heartbeat
 * that degrades it, so it must reach the workflow) is handled on the other worker, the workflows
 * the killed one held in its cache included (their tasks move off its sticky queue once that
 * times out). Nothing acknowledged is lost.
 */
export async function oneWorkerKill(ctx: RowContext, o: OneWorkerKillOptions): Promise<Row> {
  const { stack, log } = ctx;
  const exitsBefore = stack.exits.length;
  const runtimes = await createWorkspaces(stack, o.workspaces);
  const acked = new Map<string, number>();
  const beat = async (runtime: Runtime, errorRate = 0): Promise<number> => {
    const answer = await call(
      `${stack.apiUrl}/registry/heartbeat`,
      'POST',
      { ...idleHeartbeat(runtime.id, 60), error_rate: errorRate },
      runtime.token,
    );
    if (answer.status === 200) acked.set(runtime.id, (acked.get(runtime.id) ?? 0) + 1);
    return answer.status;
  };
  // Registered and beating: every workflow has run on one of the two workers and is in its cache.
  await Promise.all(
    runtimes.map(async (runtime) => {
      await call(
        `${stack.apiUrl}/registry/register`,
        'POST',
        { id: runtime.id, delivery_mode: 'poll', agent_card: { name: 'chaos' } },
        runtime.token,
      );
      for (let i = 0; i < 3; i++) await beat(runtime);
    }),
  );
  await untilOnline(stack, runtimes, 120_000);
  log('one-worker: SIGKILL worker-2 of 2');
  const killedAt = Date.now();
  await stack.killInstance('worker-2');
  const statuses = await Promise.all(runtimes.map((runtime) => beat(runtime, 0.9)));
  const statusCounts = new Map<string, number>();
  for (const status of statuses) statusCounts.set(String(status), (statusCounts.get(String(status)) ?? 0) + 1);
  const degradedAll = await waitFor(
    'every workspace degraded on the remaining worker',
    120_000,
    async () => {
      const states = await Promise.all(runtimes.map((r) => state(stack, r.id)));
      return states.every((st) => st.status === 'degraded') ? Date.now() : undefined;
    },
    250,
  ).catch(() => undefined);
  const continuedMs = (degradedAll ?? Infinity) - killedAt;
  const { acked: ackedTotal, recorded, lost } = await lostHeartbeats(stack, acked);
  const crashes = newCrashes(stack, exitsBefore);
  await stack.startInstance('worker', 1);
  const held = crashes.length === 0 && statuses.every((status) => status === 200) && continuedMs < 30_000 && lost === 0;
  return {
    fault: `one of 2 workers SIGKILLed, ${o.workspaces} workspaces whose workflows both workers held`,
    figures:
      `the degrading heartbeats after the kill: ${countsText(statusCounts)}; every workspace degraded ${s(continuedMs)} ` +
      `after the kill, on the other worker; acked ${ackedTotal}, recorded ${recorded}, lost ${lost}; crashes: ` +
      (crashes.join(', ') || 'none'),
    expected: 'every heartbeat 200; every workspace handled by the other worker < 30 s (sticky queue timeout); 0 lost',
    held,
  };
}

/**
 * One of two APIs SIGKILLed under load behind nginx (the cluster shape): nginx sends a request
 * whose connection fails to the other API, so runtimes see at most the 502s of the calls in
 * flight at the kill, which they retry, and never an error they would not retry.
 */
export async function oneApiKill(ctx: RowContext, o: BeatingFleetOptions): Promise<Row> {
  const { stack, log } = ctx;
  const exitsBefore = stack.exits.length;
  const load = await beatingFleet(stack, o);
  log('one-api: SIGKILL api-2 of 2 under load');
  const killed = load.now();
  await stack.killInstance('api-2');
  await sleep(8_000);
  const restarting = load.now();
  await stack.startInstance('api', 1);
  await sleep(4_000);
  await load.stop();
  const after = load.between(killed, restarting);
  // What a runtime gives up on: a 4xx other than 408 and 429 (simulator/runtime.ts).
  const fatal = load.answers.filter((a) => a.status >= 400 && a.status < 500 && a.status !== 408 && a.status !== 429);
  const errors = after.filter((a) => a.status !== 200);
  const { acked, recorded, lost } = await lostHeartbeats(stack, load.acked());
  const crashes = newCrashes(stack, exitsBefore);
  const held = crashes.length === 0 && fatal.length === 0 && errors.length <= 2 * o.rate && lost === 0;
  return {
    fault: `one of 2 APIs SIGKILLed behind nginx under ${o.rate} heartbeats/s over ${o.workspaces} workspaces, started again 8 s later`,
    figures:
      `in the 8 s after the kill ${byStatus(after)}; answers a runtime would not retry: ${fatal.length}; ` +
      `acked ${acked}, recorded ${recorded}, lost ${lost}; crashes: ${crashes.join(', ') || 'none'}`,
    expected: 'no answer a runtime would not retry; errors only for the calls in flight at the kill; 0 lost',
    held,
  };
}

export interface OverloadOptions {
  workspaces: number;
  rate: number;
  seconds: number;
  /** The rate after the flood, at which service must be normal again. */
  normalRate: number;
}

/**
 * Far more heartbeats than the box can serve, over a fleet already online: the excess is refused
 * at once, the rest stays fast. The fleet first beats at the normal rate until every workspace is
 * online, so the flood measures the heartbeat route, not a fleet still coming up (whose first
 * heartbeats are signalled to workflows still starting).
 */
export async function overload(ctx: RowContext, o: OverloadOptions): Promise<Row> {
  const { stack, log } = ctx;
  const exitsBefore = stack.exits.length;
  const runtimes = await createWorkspaces(stack, o.workspaces);
  const load = heartbeats(stack, runtimes, o.normalRate);
  load.start();
  await untilOnline(stack, runtimes);
  const apiPid = stack.pid('api');
  const rssBefore = rssMb(apiPid);
  let rssPeak = rssBefore;
  const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rssMb(apiPid))), 250);
  log(`overload: ${o.rate} heartbeats/s for ${o.seconds} s over ${o.workspaces} workspaces, all online`);
  const refusalsBefore = await admissionRefusals([stack.apiUrl]);
  const floodStart = load.now();
  load.setRate(o.rate);
  await sleep(o.seconds * 1_000);
  const floodEnd = load.now();
  const refusalsByReason = countsText(await admissionRefusals([stack.apiUrl]), refusalsBefore);
  load.setRate(o.normalRate);
  await sleep(10_000);
  await load.stop();
  clearInterval(sampler);

  const flood = load.between(floodStart, floodEnd);
  const accepted = flood.filter((a) => a.status === 200);
  const refused = flood.filter((a) => a.status === 429 || a.status === 503);
  const other = flood.filter((a) => a.status !== 200 && a.status !== 429 && a.status !== 503);
  // Normal again: from this second on, every call is answered 200 within 1 s.
  let normalAfter = Infinity;
  for (let t = floodEnd; t < load.now(); t += 500) {
    const rest = load.between(t, load.now() - 1_000);
    if (rest.length > 0 && rest.every((a) => a.status === 200 && a.ms < 1_000)) {
      normalAfter = t - floodEnd;
      break;
    }
  }
  const { acked, recorded, lost } = await lostHeartbeats(stack, load.acked());
  const crashes = newCrashes(stack, exitsBefore);
  const at = (answers: Answer[], p: number, of: (a: Answer) => number = (a) => a.ms): number =>
    percentile(answers.map(of), p);
  const p99 = at(accepted, 99);
  const refusalP50 = at(refused, 50);
  const socketWait = (a: Answer): number => a.socketWaitMs;
  const held =
    crashes.length === 0 &&
    p99 < 1_000 &&
    // No refusal at all: the API served the whole flood, none waited to be refused.
    (refused.length === 0 || refusalP50 < 50) &&
    rssPeak < 400 &&
    lost === 0 &&
    normalAfter < 5_000 &&
    other.length === 0;
  return {
    fault: `overload: ${o.rate} heartbeats/s offered for ${o.seconds} s over ${o.workspaces} workspaces`,
    figures:
      `${(flood.length / o.seconds).toFixed(0)}/s sent, ${(accepted.length / o.seconds).toFixed(0)}/s accepted ` +
      `(p50 ${ms(at(accepted, 50))}, p99 ${ms(p99)}); ` +
      (refused.length === 0
        ? 'none refused (the API served the whole flood); '
        : `${refused.length} refused (${byStatus(refused)}; p50 ${ms(refusalP50)}; ` +
          `the API's by reason: ${refusalsByReason}); `) +
      `other ${other.length}; ` +
      `generator skipped ${load.skipped}, waited for a connection p99 ${ms(at(flood, 99, socketWait))}; ` +
      `API RSS ${rssBefore.toFixed(0)} → peak ${rssPeak.toFixed(0)} MB; normal ${s(normalAfter)} after the flood; ` +
      `acked ${acked}, recorded ${recorded}, lost ${lost}`,
    expected: 'accepted p99 < 1 s; refusals p50 < 50 ms; API RSS < 400 MB; normal < 5 s after; 0 lost',
    held,
  };
}

export interface ApiOutageOptions {
  workspaces: number;
  /** Heartbeats a second over the fleet, sent the whole time, the API up or not. */
  rate: number;
  /** The liveness TTL of the row's workspaces; the API stays down for three of them. */
  ttlMs: number;
}

/**
 * The API SIGKILLed for three liveness TTLs while every runtime keeps trying to beat: the fleet
 * liveness controller suspects the observer (no API serving, then the whole fleet silent), declares
 * nobody, and gives each lease a full TTL once the API is back (docs/fleet-liveness.md).
 */
export async function apiOutage(ctx: RowContext, o: ApiOutageOptions): Promise<Row> {
  const { stack, log } = ctx;
  const exitsBefore = stack.exits.length;
  return withRowSettings(stack, { lifecycle: { livenessTtlMs: o.ttlMs } }, async () => {
    const runtimes = await createWorkspaces(stack, o.workspaces);
    for (const runtime of runtimes) await register(stack, runtime);
    const load = heartbeats(stack, runtimes, o.rate);
    load.start();
    await untilOnline(stack, runtimes);
    log(`api-outage: SIGKILL the API for ${s(3 * o.ttlMs)} while ${o.workspaces} runtimes beat`);
    await stack.kill('api');
    await sleep(3 * o.ttlMs);
    await stack.startApi();
    // Every lease gets a full TTL from the end of the disruption: wait past it, and a sweep more.
    await sleep(o.ttlMs + 15_000);
    await load.stop();
    const states = await Promise.all(runtimes.map((runtime) => state(stack, runtime.id)));
    const online = states.filter((st) => st.status === 'online').length;
    const wentOffline = states.filter((st) => st.recentTransitions.some((t) => t.to === 'offline')).length;
    const restarts = states.reduce((sum, st) => sum + st.restart.count, 0);
    const dead = states.filter((st) => st.deadDetection.lastVerdict?.verdict === 'dead').length;
    const crashes = newCrashes(stack, exitsBefore);
    const held =
      crashes.length === 0 && wentOffline === 0 && restarts === 0 && dead === 0 && online === runtimes.length;
    return {
      fault: `API SIGKILLed for ${s(3 * o.ttlMs)} (3x the TTL) while ${o.workspaces} runtimes kept beating`,
      figures:
        `after: ${online}/${runtimes.length} online, ${wentOffline} went offline, ${dead} declared dead, ` +
        `${restarts} restarts; crashes ${crashes.length}`,
      expected: '0 declared dead, 0 offline, 0 restarts, all online after',
      held,
    };
  });
}
