/**
 * The rows of the fleet's self-protection (docs/restarts.md, docs/fleet-liveness.md §7) on real
 * processes: boxes killed at once (detection, bounded remediation), a box that dies soon after
 * every boot (crash-loop backoff), a delivery to a busy box (drain), a cordoned workspace whose
 * box dies (cordon). Each is the end-to-end twin of time-skipping tests (test/workflow/holds.test.ts,
 * test/workflow/fleet-disruption.test.ts), with short durations set for the row only (withRowSettings).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { q } from '../activities/box/ssh.js';
import { LocalBoxDriver } from '../activities/box/local.js';
import { bounded, call, type Runtime } from '../bench/harness/load.js';
import type { Stack } from '../bench/harness/stack.js';
import { Store } from '../db/store.js';
import { defaultRuntimeCommand } from '../settings.js';
import { TOKEN_FILE } from '../simulator/runtime.js';
import { defaultLifecycleConfig } from '../workflows/config.js';
import {
  defaultFleetLivenessSettings,
  workspaceWorkflowId,
  type FleetLivenessState,
} from '../workflows/definitions.js';
import { idleHeartbeat } from '../workflows/payloads.js';
import { crashBackoffDelayMs } from '../workflows/state-machine/restart.js';
import type { WorkspaceState } from '../workflows/state-machine.js';
import {
  admin,
  boxEvents,
  createWorkspaces,
  heartbeats,
  newCrashes,
  pluginRepos,
  register,
  removeRowWorkspaces,
  s,
  state,
  untilOnline,
  waitFor,
  withRowSettings,
  type Row,
  type RowContext,
} from './rows.js';

/** How often a row reads the state of the workspaces it watches. */
const POLL_MS = 250;
/** The fleet liveness controller's sweep period: the stack runs the default. */
const SWEEP_MS = defaultFleetLivenessSettings.sweepEveryMs;
/** Time for a signal to reach a workflow and its activities to run (a busy two-core box). */
const MARGIN_MS = 3_000;

// --- the boxes' runtimes -------------------------------------------------------------------------

/** In a box folder: its runtime is the simulated one (simulator/runtime.ts), which registers and beats on its own. */
const SIMULATED_RUNTIME_MARKER = 'chaos-simulated-runtime';
/** In a box folder beside the one above: the runtime dies this long after every boot. */
const DIES_AFTER_BOOT_MARKER = 'chaos-dies-after-boot';
const DIES_AFTER_BOOT_S = 5;
/** The simulated runtime's heartbeat interval: a few beats before it dies, and a lease renewed well within the TTL. */
const SIMULATED_HEARTBEAT_MS = 1_000;

/**
 * The runtime of every box the chaos stack runs, chosen by marker files in the box (its working
 * folder), which a row writes before the first boot, so the worker's restarts start the same kind:
 * - none: a shell that takes a moment to stop, as a real runtime drains its work (a restart is
 *   then long enough to be caught mid-way); the row beats for it;
 * - SIMULATED_RUNTIME_MARKER: the simulated runtime, which registers (with the boot credential
 *   after its tokens were revoked) and beats by itself;
 * - and DIES_AFTER_BOOT_MARKER: the same, killed DIES_AFTER_BOOT_S after every boot; the box's
 *   runtime process (the shell) exits then.
 */
export function chaosRuntimeCommand(): string[] {
  const simulated = defaultRuntimeCommand().map(q).join(' ');
  const script = [
    `if [ -e ${SIMULATED_RUNTIME_MARKER} ]; then`,
    `  WL_SIM_HEARTBEAT_MS=${SIMULATED_HEARTBEAT_MS}; export WL_SIM_HEARTBEAT_MS`,
    `  if [ -e ${DIES_AFTER_BOOT_MARKER} ]; then`,
    `    ${simulated} & runtime=$!`,
    `    trap 'kill $runtime; exit 0' TERM`,
    `    sleep ${DIES_AFTER_BOOT_S} & wait $!`,
    `    kill -9 $runtime; exit 1`,
    `  fi`,
    `  exec ${simulated}`,
    `fi`,
    `trap "sleep 2; exit 0" TERM; while :; do sleep 0.2; done`,
  ].join('\n');
  return ['/bin/sh', '-c', script];
}

type BoxRuntime = 'shell' | 'simulated' | 'dies-after-boot';

/** Creates each workspace's box and boots its runtime of that kind; the driver the row reads the boxes with. */
async function bootBoxes(stack: Stack, runtimes: readonly Runtime[], kind: BoxRuntime): Promise<LocalBoxDriver> {
  const driver = new LocalBoxDriver({
    root: stack.boxesDir,
    runtimeCommand: stack.options.runtimeCommand,
    runtimeEnv: { WL_API_URL: stack.apiUrl },
  });
  await bounded(runtimes, 8, async (runtime) => {
    const dir = await driver.createBox(runtime.id);
    if (kind !== 'shell') {
      writeFileSync(join(dir, SIMULATED_RUNTIME_MARKER), '');
      writeFileSync(join(dir, TOKEN_FILE), `${runtime.token}\n`, { mode: 0o600 });
    }
    if (kind === 'dies-after-boot') writeFileSync(join(dir, DIES_AFTER_BOOT_MARKER), '');
    await driver.startRuntime(runtime.id);
  });
  return driver;
}

/** SIGKILLs the box's runtime, as a crash of the box would; throws when it is not running. */
async function killBox(driver: LocalBoxDriver, id: string): Promise<void> {
  const pid = await driver.liveRuntimePid(id);
  if (pid === null) throw new Error(`the runtime of box ${id} is not running`);
  process.kill(pid, 'SIGKILL');
}

/**
 * Removes the row's workspaces, then stops their boxes' runtimes, which outlive the run otherwise: a
 * removal stops its box's runtime only when the worker gets to it, which may be after the stack stopped.
 */
async function removeWithBoxes(stack: Stack, driver: LocalBoxDriver, runtimes: readonly Runtime[]): Promise<void> {
  await removeRowWorkspaces(stack);
  await bounded(runtimes, 8, async (runtime) => {
    await driver.stopRuntime(runtime.id).catch(async (err: unknown) => {
      // Gone meanwhile (its removal stopped it first) is what was wanted.
      if ((await driver.liveRuntimePid(runtime.id).catch(() => null)) !== null) throw err;
      return false;
    });
  });
}

/** When the workspace last went to `status`, on the workflow's clock (ms since the epoch); undefined if not recently. */
function wentTo(st: WorkspaceState, status: WorkspaceState['status']): number | undefined {
  const change = st.recentTransitions.find((t) => t.to === status);
  return change === undefined ? undefined : Date.parse(change.at);
}

/** The workspace never left online: no restart, every status change it made was to online. */
function stayedOnline(st: WorkspaceState): boolean {
  return st.status === 'online' && st.restart.count === 0 && st.recentTransitions.every((t) => t.to === 'online');
}

/** The last heartbeat the ledger recorded, on the database's clock (ms since the epoch). */
async function lastSeen(stack: Stack, ids: readonly string[]): Promise<Map<string, number>> {
  const store = Store.connect(stack.databaseUrl);
  try {
    const seen = new Map<string, number>();
    for (const id of ids) {
      const { lastSeenAt } = await store.heartbeats.read(id);
      if (lastSeenAt !== null) seen.set(id, Date.parse(lastSeenAt));
    }
    return seen;
  } finally {
    await store.close();
  }
}

const list = (values: readonly number[]): string => values.map((v) => s(v)).join(', ');

// --- boxes killed ---------------------------------------------------------------------------------

export interface BoxesKilledOptions {
  workspaces: number;
  /** Heartbeats a second over the fleet. */
  rate: number;
  /** Boxes whose runtime is SIGKILLed at once. */
  killed: number;
  ttlMs: number;
  /** WL_REMEDIATION_PER_MINUTE for the row: low, so that the restarts must be spaced. */
  perMinute: number;
}

/**
 * A share of a beating fleet's boxes SIGKILLed at once (their heartbeats stop with them): each is
 * found silent by the controller's next sweep after its TTL and declared dead, at most
 * `perMinute` a minute fleet-wide (a bucket of a minute's worth, then one every 60 s / perMinute);
 * the rest of the fleet stays online.
 */
export async function boxesKilled(ctx: RowContext, o: BoxesKilledOptions): Promise<Row> {
  const { stack, log } = ctx;
  const exitsBefore = stack.exits.length;
  const settings = {
    lifecycle: { livenessTtlMs: o.ttlMs },
    worker: { WL_REMEDIATION_PER_MINUTE: String(o.perMinute) },
  };
  return withRowSettings(stack, settings, async () => {
    await waitFor('the controller at the row rate', 60_000, async () => {
      const fleet = (await admin(stack, 'GET', '/fleet')).body as FleetLivenessState | null;
      return fleet?.settings.remediationPerMinute === o.perMinute ? true : undefined;
    });
    const runtimes = await createWorkspaces(stack, o.workspaces);
    const driver = await bootBoxes(stack, runtimes, 'shell');
    const load = heartbeats(stack, runtimes, o.rate);
    load.start();
    try {
      await untilOnline(stack, runtimes);
      // Spread over the fleet: every (workspaces / killed)th box.
      const step = Math.floor(runtimes.length / o.killed);
      const victims = runtimes.filter((_, i) => i % step === 0).slice(0, o.killed);
      const others = runtimes.filter((runtime) => !victims.includes(runtime));
      log(`boxes-killed: SIGKILL ${victims.length} of ${runtimes.length} box runtimes at once`);
      load.silence(victims.map((victim) => victim.id));
      for (const victim of victims) await killBox(driver, victim.id);
      // The bucket lets `perMinute` go at once, then one per 60 s / perMinute.
      const interval = 60_000 / o.perMinute;
      const budgetWait = Math.max(0, victims.length - o.perMinute) * interval;
      const restarted = await waitFor(
        'every killed box restarted',
        o.ttlMs + SWEEP_MS + budgetWait + 60_000,
        async () => {
          const states = await Promise.all(victims.map((victim) => state(stack, victim.id)));
          return states.every((st) => st.restart.lastStartedAt !== null) ? states : undefined;
        },
        POLL_MS,
      );
      const seen = await lastSeen(
        stack,
        victims.map((victim) => victim.id),
      );
      // Each detection: offline, a TTL after its last heartbeat, on the next sweep, or later by its wait for the budget.
      const detections = restarted
        .map((st, i) => ({
          st,
          detectedMs: (wentTo(st, 'offline') ?? Infinity) - (seen.get(victims[i]?.id ?? '') ?? -Infinity),
          restartAt: Date.parse(st.restart.lastStartedAt ?? ''),
        }))
        .sort((a, b) => a.restartAt - b.restartAt);
      const inTime = detections.every(
        ({ detectedMs }, k) =>
          detectedMs <= o.ttlMs + SWEEP_MS + MARGIN_MS + Math.max(0, k - o.perMinute + 1) * interval,
      );
      const dead = detections.filter(({ st }) => st.deadDetection.lastVerdict?.verdict === 'dead').length;
      const starts = detections.map(({ restartAt }) => restartAt);
      const first = starts[0] ?? 0;
      // No faster than the rate: within any span, at most the bucket plus what the span refills.
      const withinRate = starts.every((end, j) =>
        starts
          .slice(0, j)
          .every((start, i) => j - i + 1 <= o.perMinute + (o.perMinute * (end - start + MARGIN_MS)) / 60_000),
      );
      const restarts = restarted.reduce((sum, st) => sum + st.restart.count, 0);
      const othersStates = await Promise.all(others.map((runtime) => state(stack, runtime.id)));
      const stayed = othersStates.filter(stayedOnline).length;
      const crashes = newCrashes(stack, exitsBefore);
      const held =
        crashes.length === 0 &&
        dead === victims.length &&
        inTime &&
        withinRate &&
        restarts === victims.length &&
        stayed === others.length;
      return {
        fault:
          `${victims.length} of ${runtimes.length} box runtimes SIGKILLed at once under ${o.rate} heartbeats/s ` +
          `(TTL ${s(o.ttlMs)}, ${o.perMinute} verdicts a minute)`,
        figures:
          `detected (offline, dead) ${list(detections.map((d) => d.detectedMs))} after the last heartbeat; ${dead} declared ` +
          `dead; restarts at +${list(starts.map((start) => start - first))}; ${restarts} restarts; ${stayed}/${others.length} ` +
          `others online throughout; crashes: ${crashes.join(', ') || 'none'}`,
        expected:
          `each dead within TTL + a sweep + ${s(MARGIN_MS)} of its last heartbeat, ${s(interval)} more per one over ` +
          `the bucket of ${o.perMinute}; restarts no faster than ${o.perMinute}/min; the others never leave online`,
        held,
      };
    } finally {
      await load.stop();
      await removeWithBoxes(stack, driver, runtimes);
    }
  });
}

// --- crash loop -----------------------------------------------------------------------------------

export interface CrashLoopOptions {
  /** Workspaces beating beside it, which must not be disturbed. */
  others: number;
  rate: number;
  ttlMs: number;
  /** The settle window, shorter than the runtime's life plus the TTL, so each death is judged dead at once. */
  settleWindowMs: number;
  /** Deaths to watch: the restarts after all but the last, and the next attempt the last one shows. */
  deaths: number;
}

interface Death {
  at: number;
  crashes: number;
  crashLooping: boolean;
  nextAttemptAt: number | null;
}

/**
 * A box whose runtime dies DIES_AFTER_BOOT_S after every boot: each death is declared (silent past
 * the TTL, then not running), the first two restarted at once, then with the crash-loop backoff
 * (10 s doubling); `crashLooping` with its next attempt in the state and the CrashLooping search
 * attribute; the workspaces beside it undisturbed.
 */
export async function crashLoop(ctx: RowContext, o: CrashLoopOptions): Promise<Row> {
  const { stack, log } = ctx;
  const exitsBefore = stack.exits.length;
  const lifecycle = { livenessTtlMs: o.ttlMs, settleWindowMs: o.settleWindowMs };
  return withRowSettings(stack, { lifecycle }, async () => {
    const [looping, ...others] = await createWorkspaces(stack, 1 + o.others);
    if (looping === undefined) throw new Error('no workspace');
    const load = heartbeats(stack, others, o.rate);
    load.start();
    log(`crash-loop: a box whose runtime dies ${DIES_AFTER_BOOT_S} s after every boot, ${o.deaths} deaths`);
    const driver = await bootBoxes(stack, [looping], 'dies-after-boot');
    try {
      const client = await stack.temporal();
      const deaths: Death[] = [];
      const restartsAt = new Map<number, number>();
      // Set inside the probe below.
      const seen = { searchAttribute: false };
      const expectedTotal = Array.from({ length: o.deaths }, (_, k) =>
        crashBackoffDelayMs(k, defaultLifecycleConfig),
      ).reduce((sum, wait) => sum + wait, 0);
      const cycleMs = DIES_AFTER_BOOT_S * 1_000 + o.ttlMs + SWEEP_MS + MARGIN_MS;
      await waitFor(
        `${o.deaths} deaths`,
        o.deaths * cycleMs + expectedTotal + 30_000,
        async () => {
          const st = await state(stack, looping.id);
          const verdict = st.deadDetection.lastVerdict;
          if (st.deadDetection.deadDeclarations > deaths.length && verdict?.verdict === 'dead')
            deaths.push({
              at: Date.parse(verdict.at),
              crashes: st.restart.crashes,
              crashLooping: st.restart.crashLooping,
              nextAttemptAt: st.restart.nextAttemptAt === null ? null : Date.parse(st.restart.nextAttemptAt),
            });
          if (st.restart.lastStartedAt !== null && !restartsAt.has(st.restart.count))
            restartsAt.set(st.restart.count, Date.parse(st.restart.lastStartedAt));
          if (st.restart.crashLooping && !seen.searchAttribute) {
            const query = `WorkflowId = '${workspaceWorkflowId(looping.id)}' AND CrashLooping = true`;
            for await (const found of client.workflow.list({ query })) seen.searchAttribute ||= found.workflowId !== '';
          }
          return deaths.length >= o.deaths ? true : undefined;
        },
        POLL_MS,
      );
      // The restart that answers death k is restart k (the first boot is no restart).
      const waits = deaths.slice(0, -1).map((death, k) => (restartsAt.get(k + 1) ?? Infinity) - death.at);
      const expected = deaths.map((_, k) => crashBackoffDelayMs(k, defaultLifecycleConfig));
      const last = deaths[deaths.length - 1];
      const lastWait = last?.nextAttemptAt === null || last === undefined ? 0 : last.nextAttemptAt - last.at;
      const spaced = waits.every(
        (wait, k) => wait >= (expected[k] ?? 0) - POLL_MS && wait < (expected[k] ?? 0) + MARGIN_MS,
      );
      const shown = deaths.every(
        (death, k) => death.crashLooping === k >= 2 && (death.nextAttemptAt !== null) === k >= 2,
      );
      const othersStates = await Promise.all(others.map((runtime) => state(stack, runtime.id)));
      const stayed = othersStates.filter(stayedOnline).length;
      const crashes = newCrashes(stack, exitsBefore);
      const held =
        crashes.length === 0 &&
        deaths.length === o.deaths &&
        spaced &&
        Math.abs(lastWait - (expected[o.deaths - 1] ?? 0)) < 1_000 &&
        shown &&
        seen.searchAttribute &&
        stayed === others.length;
      return {
        fault: `a box whose runtime dies ${DIES_AFTER_BOOT_S} s after every boot (TTL ${s(o.ttlMs)}), ${o.deaths} deaths`,
        figures:
          `restarts ${list(waits)} after deaths 1-${waits.length}, the next ${s(lastWait)} after death ${deaths.length}; ` +
          `crashes counted ${deaths.map((d) => d.crashes).join(', ')}; crashLooping with nextAttemptAt from death ` +
          `${deaths.findIndex((d) => d.crashLooping) + 1}; CrashLooping search attribute ${seen.searchAttribute ? 'found' : 'not found'}; ` +
          `${stayed}/${others.length} others online throughout; crashes: ${crashes.join(', ') || 'none'}`,
        expected: `restarts after ${list(expected)}; crashLooping and nextAttemptAt from the third death, the search attribute; others undisturbed`,
        held,
      };
    } finally {
      await load.stop();
      await removeWithBoxes(stack, driver, [looping]);
    }
  });
}

// --- drain ------------------------------------------------------------------------------------------

export interface DrainOptions {
  drainTimeoutMs: number;
  /** How long the first runtime stays busy after its restart is held. */
  busyForMs: number;
}

/**
 * A plugin delivered to two busy boxes (runtimes that registered idle, then took work: their
 * heartbeats report active tasks): each restart is held; the first is released by its first
 * heartbeat reporting none, the second, busy throughout, by the drain deadline.
 */
export async function drain(ctx: RowContext, o: DrainOptions): Promise<Row> {
  const { stack, log } = ctx;
  const exitsBefore = stack.exits.length;
  return withRowSettings(stack, { lifecycle: { drainTimeoutMs: o.drainTimeoutMs } }, async () => {
    const fault = `a plugin delivered to 2 online boxes whose runtimes took work after they registered (drain deadline ${s(o.drainTimeoutMs)})`;
    const expected = `no restart while busy; restarted < ${s(MARGIN_MS)} after the first idle heartbeat; the busy one at the deadline (< ${s(MARGIN_MS)} late)`;
    const [plugin] = pluginRepos(stack, 1, 1);
    const [draining, busy] = await createWorkspaces(stack, 2);
    if (plugin === undefined || draining === undefined || busy === undefined) throw new Error('no workspaces');
    const driver = await bootBoxes(stack, [draining, busy], 'shell');
    for (const runtime of [draining, busy]) await register(stack, runtime);
    // The runtimes' heartbeats, each second, with the tasks each is running.
    // Idle at first, as a runtime that registers and then takes work.
    const tasks = new Map([
      [draining.id, 0],
      [busy.id, 0],
    ]);
    // The first heartbeat reporting no task after the work is done (set below).
    const released: { at?: number; firstIdleBeat?: number } = {};
    const stopBeating = new AbortController();
    const beats = (async () => {
      for (let uptime = 0; !stopBeating.signal.aborted; uptime++) {
        await Promise.all(
          [draining, busy].map(async (runtime) => {
            const active = tasks.get(runtime.id) ?? 0;
            const sent = Date.now();
            const payload = { ...idleHeartbeat(runtime.id, uptime), active_tasks: active };
            const answer = await call(`${stack.apiUrl}/registry/heartbeat`, 'POST', payload, runtime.token);
            if (runtime === draining && released.at !== undefined && active === 0 && answer.status === 200)
              released.firstIdleBeat ??= sent;
          }),
        );
        await sleep(1_000);
      }
    })();
    try {
      await untilOnline(stack, [draining, busy]);
      // Online a while (its contract published), then busy: a few busy heartbeats acknowledged.
      await sleep(3_000);
      for (const runtime of [draining, busy]) tasks.set(runtime.id, 2);
      await sleep(3_000);
      log(`drain: deliver ${plugin.name} to 2 busy boxes`);
      const declaredAt = Date.now();
      for (const runtime of [draining, busy]) {
        const answer = await admin(stack, 'PUT', `/workspaces/${runtime.id}/plugins`, { plugins: [plugin] });
        if (answer.status !== 202)
          throw new Error(`declaring the plugin: ${answer.status} ${JSON.stringify(answer.body)}`);
      }
      // Each restart held, or (which must not happen) started at once.
      const asked = await waitFor('both restarts asked', 120_000, async () => {
        const states = await Promise.all([draining, busy].map((runtime) => state(stack, runtime.id)));
        return states.every((st) => st.restart.held?.cause === 'reconcile' || st.restart.lastStartedAt !== null)
          ? states
          : undefined;
      });
      const unheld = asked.filter((st) => st.restart.held === null);
      if (unheld.length > 0) {
        const crashes = newCrashes(stack, exitsBefore);
        return {
          fault,
          figures:
            `${unheld.length} of 2 restarted at once, while every heartbeat reported 2 active tasks: ` +
            asked
              .map((st) => {
                const known = st.lastHeartbeat === null ? 'none' : String(st.lastHeartbeat.activeTasks);
                const what =
                  st.restart.held === null
                    ? `restarted ${s(Date.parse(st.restart.lastStartedAt ?? '') - declaredAt)} after the plugin was declared`
                    : 'held';
                return `${what} (the workflow's last heartbeat: ${known === 'none' ? 'none' : `${known} active tasks`})`;
              })
              .join('; ') +
            `; crashes: ${crashes.join(', ') || 'none'}`,
          expected,
          held: false,
        };
      }
      const heldSince = asked.map((st) => Date.parse(st.restart.held?.since ?? ''));
      const [drainingSince = 0, busySince = 0] = heldSince;
      // Busy for a while: no restart meanwhile.
      let restartedWhileBusy = false;
      while (Date.now() < drainingSince + o.busyForMs) {
        const st = await state(stack, draining.id);
        restartedWhileBusy ||= st.restart.count > 0 || st.restart.inFlight;
        await sleep(POLL_MS);
      }
      log('drain: the first runtime reports no more tasks');
      released.at = Date.now();
      tasks.set(draining.id, 0);
      const drained = await waitFor(
        'the idle box restarted',
        30_000,
        async () => {
          const st = await state(stack, draining.id);
          return st.restart.lastStartedAt !== null ? st : undefined;
        },
        POLL_MS,
      );
      const drainedAt = Date.parse(drained.restart.lastStartedAt ?? '');
      const busyRestarted = await waitFor(
        'the busy box restarted at the drain deadline',
        o.drainTimeoutMs + 60_000,
        async () => {
          const st = await state(stack, busy.id);
          return st.restart.lastStartedAt !== null ? st : undefined;
        },
        POLL_MS,
      );
      const busyAfter = Date.parse(busyRestarted.restart.lastStartedAt ?? '') - busySince;
      const heldFor = drainedAt - drainingSince;
      const afterIdle = drainedAt - (released.firstIdleBeat ?? Infinity);
      const delivered = [draining, busy].every((runtime) =>
        boxEvents(stack, runtime.id).some((e) => e.startsWith('deliver ')),
      );
      const crashes = newCrashes(stack, exitsBefore);
      const held =
        crashes.length === 0 &&
        delivered &&
        !restartedWhileBusy &&
        heldFor >= o.busyForMs &&
        afterIdle >= 0 &&
        afterIdle < MARGIN_MS &&
        drained.restart.count === 1 &&
        busyAfter >= o.drainTimeoutMs &&
        busyAfter < o.drainTimeoutMs + MARGIN_MS &&
        busyRestarted.restart.count === 1;
      return {
        fault,
        figures:
          `restart held for ${s(heldFor)}, ${restartedWhileBusy ? 'restarted' : 'not restarted'} while busy, restarted ` +
          `${s(afterIdle)} after the first idle heartbeat; the box busy throughout restarted ${s(busyAfter)} after its ` +
          `restart was asked; restarts ${drained.restart.count} and ${busyRestarted.restart.count}; crashes: ${crashes.join(', ') || 'none'}`,
        expected,
        held,
      };
    } finally {
      stopBeating.abort();
      await beats;
      await removeWithBoxes(stack, driver, [draining, busy]);
    }
  });
}

// --- cordoned dies ------------------------------------------------------------------------------------

export interface CordonedDiesOptions {
  ttlMs: number;
}

/**
 * A cordoned workspace whose box dies: the verdict is shown (offline, dead) and nothing restarts it
 * for two TTLs; uncordon: exactly one restart, and its new runtime brings it back online.
 */
export async function cordonedDies(ctx: RowContext, o: CordonedDiesOptions): Promise<Row> {
  const { stack, log } = ctx;
  const exitsBefore = stack.exits.length;
  return withRowSettings(stack, { lifecycle: { livenessTtlMs: o.ttlMs } }, async () => {
    const [runtime] = await createWorkspaces(stack, 1);
    if (runtime === undefined) throw new Error('no workspace');
    const driver = await bootBoxes(stack, [runtime], 'simulated');
    try {
      await untilOnline(stack, [runtime]);
      const cordon = await admin(stack, 'POST', `/workspaces/${runtime.id}/cordon`, { reason: 'chaos: cordoned-dies' });
      const cordoned = (cordon.body as { outcome?: string } | null)?.outcome;
      log('cordoned-dies: SIGKILL the box runtime of a cordoned workspace');
      await killBox(driver, runtime.id);
      const declared = await waitFor(
        'the verdict',
        o.ttlMs + SWEEP_MS + 30_000,
        async () => {
          const st = await state(stack, runtime.id);
          return st.status === 'offline' && st.deadDetection.lastVerdict?.verdict === 'dead' ? st : undefined;
        },
        POLL_MS,
      );
      const [seen = NaN] = (await lastSeen(stack, [runtime.id])).values();
      const detectedMs = (wentTo(declared, 'offline') ?? Infinity) - seen;
      // Two TTLs from the verdict: nothing restarts it.
      const holdUntil = Date.now() + 2 * o.ttlMs;
      let restartedWhileCordoned = false;
      let stillOffline = true;
      let heldRestart = '';
      while (Date.now() < holdUntil) {
        const st = await state(stack, runtime.id);
        restartedWhileCordoned ||= st.restart.count > 0 || st.restart.inFlight;
        stillOffline &&= st.status === 'offline';
        heldRestart = st.restart.held?.reason ?? heldRestart;
        await sleep(POLL_MS);
      }
      const boxRestartsCordoned = boxEvents(stack, runtime.id).filter((e) => e.startsWith('restart ')).length;
      log('cordoned-dies: uncordon');
      const uncordon = await admin(stack, 'POST', `/workspaces/${runtime.id}/uncordon`, {});
      const uncordoned = uncordon.body as { outcome?: string; detail?: string } | null;
      const uncordonedAt = Date.now();
      const back = await waitFor(
        'back online',
        60_000,
        async () => {
          const st = await state(stack, runtime.id);
          return st.status === 'online' && st.restart.count > 0 ? st : undefined;
        },
        POLL_MS,
      );
      const backMs = Date.now() - uncordonedAt;
      // Anything more that the uncordon set off would show now.
      await sleep(SWEEP_MS);
      const after = await state(stack, runtime.id);
      const boxRestarts = boxEvents(stack, runtime.id).filter((e) => e.startsWith('restart ')).length;
      const crashes = newCrashes(stack, exitsBefore);
      const held =
        crashes.length === 0 &&
        cordoned === 'started' &&
        detectedMs <= o.ttlMs + SWEEP_MS + MARGIN_MS &&
        !restartedWhileCordoned &&
        stillOffline &&
        boxRestartsCordoned === 0 &&
        heldRestart !== '' &&
        uncordoned?.outcome === 'started' &&
        back.restart.count === 1 &&
        after.restart.count === 1 &&
        after.status === 'online' &&
        boxRestarts === 1;
      return {
        fault: `a cordoned workspace's box runtime SIGKILLed (TTL ${s(o.ttlMs)}), uncordoned ${s(2 * o.ttlMs)} after the verdict`,
        figures:
          `cordon ${cordoned ?? cordon.status}; offline and dead ${s(detectedMs)} after the last heartbeat; for 2 TTLs ` +
          `${stillOffline ? 'offline' : 'not offline'}, restarts ${restartedWhileCordoned ? 'started' : '0'} (held: ` +
          `${heldRestart || 'none'}); uncordon ${uncordoned?.outcome ?? uncordon.status} (${uncordoned?.detail ?? ''}); ` +
          `online ${s(backMs)} later; restarts ${after.restart.count} (box: ${boxRestarts}); crashes: ${crashes.join(', ') || 'none'}`,
        expected: `dead within TTL + a sweep + ${s(MARGIN_MS)}; no restart while cordoned; on uncordon exactly 1 restart, online`,
        held,
      };
    } finally {
      await removeWithBoxes(stack, driver, [runtime]);
    }
  });
}
