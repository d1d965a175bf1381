/**
 * Watching the workspaces: each poll reads every workspace's state through the API and its
 * runtime's pid from its box, and says each change it sees (transitions, with the workflow's
 * own timestamps; reconcile outcomes; restarts; registers; dead detection's verdicts; rejected
 * payloads) once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { WorkspaceView } from '../api/routes/workspaces.js';
import type { WorkspaceState } from '../workflows/state-machine.js';
import { describeError } from './http.js';
import { TimeoutError, type Simulation, type Tracked } from './simulation.js';

/** How often the phases poll each workspace's state. */
const POLL_MS = 1_000;

/** The `caller` of the simulator's failed-dispatch reports: the requester of the verdicts they get. */
export const DISPATCH_CALLER = 'simulator';

/** Plugins the workspace's reconcile reports installed. */
export function installedCount(state: WorkspaceState): number {
  return Object.values(state.plugins).filter((p) => p.status === 'installed').length;
}

export function pluginSummary(sim: Simulation, state: WorkspaceState): string {
  const installed = installedCount(state);
  const pending = state.reconcile.lastFinishedAt === null ? '-' : String(state.pluginsPending);
  return `plugins ${installed}/${sim.options.plugins} pending ${pending}`;
}

/** Online with every plugin installed, and nothing (restart, follow-up, reconcile) still under way. */
export function ready(sim: Simulation, t: Tracked): boolean {
  const s = t.state;
  if (s === null || s.status !== 'online') return false;
  return (
    installedCount(s) === sim.options.plugins &&
    !s.restart.inFlight &&
    s.restart.followUp === null &&
    !s.reconcile.running
  );
}

/** Which workspaces are not `ready`, and how far each got. */
export function notReady(sim: Simulation): string {
  return (
    'not every workspace came online with all plugins installed: ' +
    sim.tracked
      .filter((t) => !ready(sim, t))
      .map((t) => {
        const lastError = sim.pollErrors.get(t.id);
        const detail = t.state ? `, ${pluginSummary(sim, t.state)}` : '';
        return `${t.id} is ${t.state?.status ?? 'unknown'}${detail}${lastError ? ` (last poll: ${lastError})` : ''}`;
      })
      .join('; ')
  );
}

/** Polls every workspace and says what changed; pollOne reports its own errors, so this never rejects. */
export async function pollAll(sim: Simulation): Promise<void> {
  // Lines of one poll in time order: transitions carry the workflow's own timestamps.
  const lines: { at: number; line: string }[] = [];
  const note = (line: string, at: number = Date.now()): void => void lines.push({ at, line });
  await Promise.all(sim.tracked.map((t) => pollOne(sim, t, note)));
  lines.sort((a, b) => a.at - b.at).forEach(({ at, line }) => sim.say(line, at));
}

/** Polls until `done` holds or the phase deadline passes; `what` names what did not happen. */
export async function waitUntil(
  sim: Simulation,
  deadline: number,
  what: () => string,
  done: () => boolean,
): Promise<void> {
  const { abort } = sim;
  for (;;) {
    sim.checkAbort();
    await pollAll(sim);
    if (done()) return;
    if (Date.now() > deadline) throw new TimeoutError(what());
    await sleep(POLL_MS, undefined, abort ? { signal: abort } : {}).catch(() => undefined);
  }
}

async function pollOne(sim: Simulation, t: Tracked, note: (line: string, at?: number) => void): Promise<void> {
  const pid = await sim.driver.runtimePid(t.id);
  if (pid !== t.pid) {
    note(`${sim.pad(t.id)} runtime pid ${t.pid ?? '-'} → ${pid ?? '-'}`);
    t.pid = pid;
  }
  let next: WorkspaceView;
  try {
    next = await sim.api.state(t.id);
  } catch (err) {
    const message = describeError(err);
    if (sim.pollErrors.get(t.id) !== message) note(`${sim.pad(t.id)} poll failed: ${message}`);
    sim.pollErrors.set(t.id, message);
    return;
  }
  sim.pollErrors.delete(t.id);
  const prev = t.state;
  t.state = next;
  const id = sim.pad(t.id);

  const newTransitions = next.counters.transitions - (prev?.counters.transitions ?? 0);
  const fresh = next.recentTransitions.slice(0, Math.max(0, newTransitions)).reverse();
  if (newTransitions > next.recentTransitions.length)
    note(`${id} (${newTransitions - next.recentTransitions.length} transition(s) between polls not shown)`);
  for (const change of fresh) {
    const at = Date.parse(change.at);
    t.transitions.push({ from: change.from, to: change.to, cause: change.cause, atMs: at - sim.started });
    note(`${id} ${change.from} → ${change.to}  ${pluginSummary(sim, next)}  (${change.cause})`, at);
  }

  const pluginLine = (state: WorkspaceState | null): string =>
    state === null
      ? ''
      : Object.entries(state.plugins)
          .map(([name, p]) => `${name}:${p.status}:${p.via ?? ''}:${p.revision ?? ''}:${p.error ?? ''}`)
          .sort()
          .join(',');
  if (pluginLine(next) !== pluginLine(prev) && Object.keys(next.plugins).length > 0) {
    const parts = Object.entries(next.plugins)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, p]) =>
        p.status === 'installed'
          ? `${name} ${p.via ?? ''} ${(p.revision ?? '').slice(0, 7)}`
          : `${name} FAILED (${p.error ?? 'unknown'})`,
      );
    note(`${id} reconcile: ${pluginSummary(sim, next)}: ${parts.join(', ')}`);
  }
  if (next.restart.count !== (prev?.restart.count ?? 0))
    note(
      `${id} restart #${next.restart.count} by ${next.restart.lastRequester ?? '?'}: ${next.restart.lastReason ?? ''}`,
    );
  if (next.restart.lastError !== null && next.restart.lastError !== prev?.restart.lastError)
    note(`${id} restart failed: ${next.restart.lastError}`);
  if (next.reconcile.lastError !== null && next.reconcile.lastError !== prev?.reconcile.lastError)
    note(`${id} reconcile failed: ${next.reconcile.lastError}`);
  if (next.counters.registers !== (prev?.counters.registers ?? 0))
    note(`${id} runtime registered (register #${next.counters.registers}, ${next.agentCard?.skills ?? 0} skill(s))`);
  // The simulator's own reports print their verdict when the answer comes back.
  const verdict = next.deadDetection.lastVerdict;
  if (verdict !== null && verdict.at !== prev?.deadDetection.lastVerdict?.at && verdict.requester !== DISPATCH_CALLER)
    note(`${id} dead detection: ${verdict.verdict} (${verdict.requester}): ${verdict.detail}`);
  if (next.counters.rejected !== (prev?.counters.rejected ?? 0))
    note(`${id} payload rejected: ${next.recentRejections[0]?.reason ?? '?'}`);
}
