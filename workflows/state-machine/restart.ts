/**
 * Restarts and dead detection's decisions: the one restart operation whoever asks (operator,
 * reconcile, watchdog, a dead verdict), its follow-up and its retries, the settle window after
 * it, strikes while settling, and the dead declaration. The probes and waits that lead to these
 * decisions are the workflow's (workflows/dead-detection.ts).
 */
import type { LifecycleConfig } from '../config.js';
import { iso, seconds, type Draft } from './draft.js';
import type { Event, ProbeResult, RestartCause, WorkspaceState } from './types.js';

/**
 * The one restart operation, whoever asks: stamps the start, clears the URL, goes
 * provisioning and restarts the box. A request while one is in flight becomes exactly one
 * follow-up; none is dropped.
 */
export function requestRestart(draft: Draft, reason: string, requester: string, cause: RestartCause): void {
  const restart = draft.state.restart;
  if (draft.state.status === 'removed') return;
  if (draft.external) return draft.reject('restart', `${reason}: the runtime is external; restart it where it runs`);
  if (restart.inFlight) {
    restart.followUp = { reason, requester, cause };
    return;
  }
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
  const windowOpen = current !== null && draft.now - Date.parse(current.firstAt) <= config.strikeWindowMs;
  detection.strikes = windowOpen
    ? { ...current, count: current.count + 1, lastAt: draft.at }
    : { count: 1, firstAt: draft.at, lastAt: draft.at };
  if (detection.strikes.count >= config.strikeThreshold) {
    declareDead(
      draft,
      `${detection.strikes.count} not-running probes within ${seconds(config.strikeWindowMs)} while settling`,
      requester,
    );
  }
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
