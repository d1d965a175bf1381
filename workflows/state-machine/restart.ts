/**
 * Restarts and dead detection's decisions: the one restart operation whoever asks (operator,
 * reconcile, watchdog, a dead verdict), its follow-up and its retries, what holds it (cordon,
 * crash-loop backoff, drain), the settle window after it, strikes while settling, and the dead
 * declaration. The probes and waits that lead to these decisions are the workflow's
 * (workflows/dead-detection.ts).
 */
import type { LifecycleConfig } from '../config.js';
import { iso, merged, refused, seconds, started, type Draft } from './draft.js';
import type {
  CommandAnswer,
  Event,
  HeldRestart,
  ProbeResult,
  RestartCause,
  RestartHold,
  WorkspaceState,
} from './types.js';

/**
 * The one restart operation, whoever asks: stamps the start, clears the URL, goes
 * provisioning and restarts the box. A request while one is in flight becomes exactly one
 * follow-up; an automatic one that a hold applies to waits as the held restart (requests
 * meanwhile merge into it); none is dropped. A death soon after the last restart counts a crash.
 */
export function requestRestart(draft: Draft, reason: string, requester: string, cause: RestartCause): CommandAnswer {
  const restart = draft.state.restart;
  if (draft.state.status === 'removed') return refused('the workspace is removed');
  if (draft.external) {
    draft.reject('restart', `${reason}: the runtime is external; restart it where it runs`);
    return refused('the runtime is external: restart it where it runs');
  }
  if (restart.inFlight) {
    restart.followUp = { reason, requester, cause };
    return merged(`into restart ${restart.count} in flight: one more restart follows it`);
  }
  const previous = restart.held;
  if ((cause === 'dead' || cause === 'silent') && previous === null) countCrash(draft);
  // An operator restart starts now; a held restart that only loads plugins takes the more urgent
  // request's reason (and its holds).
  const request: HeldRestart =
    cause === 'requested' || previous === null || previous.cause === 'reconcile'
      ? { reason, requester, cause, since: previous?.since ?? draft.at }
      : previous;
  const hold = holdOf(draft.state, request, draft.now, draft.config);
  if (hold !== null) {
    restart.held = request;
    return merged(`held (${hold})`);
  }
  startRestart(draft, request.reason, request.requester, request.cause);
  return started(`restart ${restart.count}`);
}

function startRestart(draft: Draft, reason: string, requester: string, cause: RestartCause): void {
  const restart = draft.state.restart;
  // This restart answers whatever was held, and it is the attempt the backoff waited for.
  restart.held = null;
  restart.nextAttemptAt = null;
  restart.inFlight = true;
  restart.count++;
  restart.lastReason = reason;
  restart.lastRequester = requester;
  restart.lastStartedAt = draft.at;
  restart.settleUntil = iso(draft.now + draft.config.settleWindowMs);
  draft.state.url = null;
  draft.moveTo('provisioning', `restart: ${reason}`);
  draft.effects.push({ type: 'restartBox', restartId: `restart-${restart.count}`, reason, cause });
}

export function onRestartFinished(draft: Draft, outcome: 'succeeded' | 'failed', error: string | undefined): void {
  const restart = draft.state.restart;
  if (!restart.inFlight) return;
  restart.inFlight = false;
  restart.lastFinishedAt = draft.at;
  restart.lastError = outcome === 'failed' ? (error ?? 'unknown error') : null;
  const retry = outcome === 'failed' && draft.state.status !== 'removed';
  restart.failures = retry ? restart.failures + 1 : 0;
  restart.retryAt = retry ? iso(draft.now + restartRetryDelayMs(restart.failures)) : null;
  const followUp = restart.followUp;
  restart.followUp = null;
  if (followUp) requestRestart(draft, followUp.reason, followUp.requester, followUp.cause ?? 'requested');
}

/**
 * What holds a restart now, the first that applies, or null: operator restarts are never held;
 * a cordon holds every other; a crash-loop backoff until its next attempt; a restart that only
 * loads plugins drains while the last heartbeat reports active tasks, until the drain deadline.
 */
export function holdOf(
  state: WorkspaceState,
  request: Pick<HeldRestart, 'cause' | 'since'>,
  now: number,
  config: LifecycleConfig,
): RestartHold | null {
  if (request.cause === 'requested') return null;
  if (state.cordon !== null) return 'cordoned';
  const { nextAttemptAt } = state.restart;
  if (nextAttemptAt !== null && now < Date.parse(nextAttemptAt)) return 'crash-loop backoff';
  const deadline = drainDeadline(state, request, config);
  if (deadline !== null && now < deadline) return 'draining';
  return null;
}

/** The drain deadline of a restart that only loads plugins, while the last heartbeat reports active tasks; else null. */
function drainDeadline(
  state: WorkspaceState,
  request: Pick<HeldRestart, 'cause' | 'since'>,
  config: LifecycleConfig,
): number | null {
  return request.cause === 'reconcile' && state.activeTasks > 0
    ? Date.parse(request.since) + config.drainTimeoutMs
    : null;
}

/** A held restart waits for the runtime to finish its work now: the workflow wants the next heartbeat. */
export function isDraining(state: WorkspaceState, now: number, config: LifecycleConfig): boolean {
  const held = state.restart.held;
  return held !== null && !state.restart.inFlight && holdOf(state, held, now, config) === 'draining';
}

/**
 * When time alone releases the held restart (the backoff's next attempt, the drain deadline), or
 * null: none is held, or only an uncordon or a heartbeat releases it.
 */
export function heldRestartDeadline(state: WorkspaceState, config: LifecycleConfig): number | null {
  const { held, inFlight, nextAttemptAt } = state.restart;
  if (held === null || inFlight || state.cordon !== null) return null;
  if (nextAttemptAt !== null) return Date.parse(nextAttemptAt);
  return drainDeadline(state, held, config);
}

/**
 * After every event: a backoff whose time has come is over, and a held restart that nothing holds
 * any more starts (its hold ended: uncordon, a heartbeat with no active task, a deadline).
 */
export function releaseHeldRestart(draft: Draft): void {
  const restart = draft.state.restart;
  if (restart.nextAttemptAt !== null && draft.now >= Date.parse(restart.nextAttemptAt)) restart.nextAttemptAt = null;
  const held = restart.held;
  if (held === null || restart.inFlight) return;
  if (draft.state.status === 'removed') {
    restart.held = null;
    return;
  }
  if (holdOf(draft.state, held, draft.now, draft.config) === null)
    startRestart(draft, held.reason, held.requester, held.cause);
}

/**
 * A fresh runtime checked in: a held restart for its death or silence is moot (one that loads
 * plugins is still owed: only a restart loads them).
 */
export function dropMootHeldRestart(draft: Draft): void {
  const restart = draft.state.restart;
  if (restart.held === null || restart.held.cause === 'reconcile') return;
  restart.held = null;
  restart.nextAttemptAt = null;
}

/**
 * A death (a dead verdict, or silence past the watchdog) within the healthy stretch after the
 * last restart is a crash; from the second in a row, automatic restarts back off. A death after a
 * longer run starts the count again.
 */
function countCrash(draft: Draft): void {
  const restart = draft.state.restart;
  const { config } = draft;
  const last = restart.lastStartedAt;
  const crashed = last !== null && draft.now - Date.parse(last) < config.healthyStretchMs;
  restart.crashes = crashed ? restart.crashes + 1 : 0;
  restart.crashLooping = restart.crashes >= 2;
  restart.nextAttemptAt = restart.crashLooping ? iso(draft.now + crashBackoffDelayMs(restart.crashes, config)) : null;
}

/** The wait before the next automatic restart after `crashes` crashes in a row: base, doubling per crash from the second, at most the max. */
export function crashBackoffDelayMs(
  crashes: number,
  config: Pick<LifecycleConfig, 'crashBackoffBaseMs' | 'crashBackoffMaxMs'>,
): number {
  if (crashes < 2) return 0;
  return Math.min(config.crashBackoffMaxMs, config.crashBackoffBaseMs * 2 ** (crashes - 2));
}

/** When a healthy stretch online resets the crash count, or null. */
export function crashResetDeadline(state: WorkspaceState, config: LifecycleConfig): number | null {
  return state.restart.crashes > 0 && state.status === 'online'
    ? Date.parse(state.statusSince) + config.healthyStretchMs
    : null;
}

/** A deadline fired: a runtime online for a healthy stretch is no longer crash-looping. */
export function resetCrashesIfDue(draft: Draft): void {
  const deadline = crashResetDeadline(draft.state, draft.config);
  if (deadline === null || draft.now < deadline) return;
  const restart = draft.state.restart;
  restart.crashes = 0;
  restart.crashLooping = false;
  restart.nextAttemptAt = null;
}

/** The wait before asking a failed restart again: 1 min, doubling per failure in a row, at most 30 min. */
export function restartRetryDelayMs(failures: number): number {
  return Math.min(30 * 60_000, 60_000 * 2 ** Math.max(0, failures - 1));
}

/** When a failed restart is asked again, or null. */
export function restartRetryDeadline(state: WorkspaceState): number | null {
  const { retryAt, inFlight } = state.restart;
  return retryAt !== null && !inFlight ? Date.parse(retryAt) : null;
}

/** A deadline fired: a failed restart whose retry is due is asked again. */
export function retryRestartIfDue(draft: Draft): void {
  const retry = restartRetryDeadline(draft.state);
  if (retry === null || draft.now < retry) return;
  const restart = draft.state.restart;
  restart.retryAt = null;
  requestRestart(
    draft,
    `retry ${restart.failures} after a failed restart (${restart.lastError ?? '?'}): ${restart.lastReason ?? ''}`,
    restart.lastRequester ?? 'restart-retry',
    'retry',
  );
}

/**
 * The box is dead: offline (unless removed or provisioning), URL cleared, tokens revoked,
 * strikes reset, and a restart that is never dropped (it coalesces if one is in flight).
 */
export function declareDead(draft: Draft, reason: string, requester: string): void {
  const state = draft.state;
  if (state.status === 'removed' || draft.external) return;
  state.deadDetection.strikes = null;
  state.deadDetection.deadDeclarations++;
  if (state.status !== 'provisioning') draft.moveTo('offline', `dead: ${reason}`);
  state.url = null;
  draft.effects.push({ type: 'revokeTokens', mintedBefore: draft.at });
  requestRestart(draft, `dead: ${reason}`, requester, 'dead');
}

/** A probe's result is recorded; a running box resets the strikes. */
export function onProbed(draft: Draft, result: ProbeResult): void {
  draft.state.deadDetection.lastProbe = { result, at: draft.at };
  if (result === 'running') draft.state.deadDetection.strikes = null;
}

/**
 * Strikes within the window declare a settling box dead (2 within 30 s by default): one
 * not-running probe while a restarted box settles proves nothing, two in a row do.
 */
export function onStrike(draft: Draft, requester: string, config: LifecycleConfig): void {
  if (draft.state.status === 'removed' || draft.external) return;
  const detection = draft.state.deadDetection;
  const current = detection.strikes;
  detection.strikes = strikeWindowOpen(draft.state, draft.now, config)
    ? { count: (current?.count ?? 0) + 1, firstAt: current?.firstAt ?? draft.at, lastAt: draft.at }
    : { count: 1, firstAt: draft.at, lastAt: draft.at };
  if (detection.strikes.count >= config.strikeThreshold) {
    declareDead(
      draft,
      `${detection.strikes.count} not-running probes within ${seconds(config.strikeWindowMs)} while settling`,
      requester,
    );
  }
}

function strikeWindowOpen(state: WorkspaceState, now: number, config: LifecycleConfig): boolean {
  const current = state.deadDetection.strikes;
  return current !== null && now - Date.parse(current.firstAt) <= config.strikeWindowMs;
}

/** Whether a strike now would reach the threshold and declare the box dead. */
export function strikeDeclaresDead(state: WorkspaceState, now: number, config: LifecycleConfig): boolean {
  const count = strikeWindowOpen(state, now, config) ? (state.deadDetection.strikes?.count ?? 0) + 1 : 1;
  return count >= config.strikeThreshold;
}

/** The evaluation's verdict, for the operator. */
export function onVerdict(draft: Draft, { verdict, detail, requester }: Extract<Event, { type: 'verdict' }>): void {
  draft.state.deadDetection.lastVerdict = { verdict, detail, requester, at: draft.at };
}

/** Pure reads the dead-detection evaluation needs (its steps 2 and 4). */
export function settleDeadline(state: WorkspaceState, config: LifecycleConfig): number | null {
  const started = state.restart.lastStartedAt;
  return started === null ? null : Date.parse(started) + config.settleWindowMs;
}

export function isSettling(state: WorkspaceState, now: number, config: LifecycleConfig): boolean {
  const deadline = settleDeadline(state, config);
  return deadline !== null && now < deadline;
}
