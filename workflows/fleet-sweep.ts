/**
 * The fleet liveness controller's decisions and view, pure: which expired leases a sweep signals,
 * what a sweep leaves in the controller's state, and what the Web UI shows of it. The workflow
 * (fleet-liveness.ts) runs the sweep's activities around them.
 *
 * A sweep judges the fleet before it judges a workspace, after the Kubernetes node lifecycle
 * controller (docs/fleet-liveness.md): when a share of the fleet went silent within one TTL, or
 * no API process served, the observer is suspected, not the fleet (a disruption: nobody is
 * signalled, and once it ends every lease is silent only from its end); otherwise the expired
 * leases are signalled at a bounded rate (a token bucket), unless an operator paused remediation.
 */
import type { ExpiredLease, ExpiredLeases } from '../db/tables/heartbeat-ledger.js';
import type { SignalledLeases } from '../activities/fleet-liveness.js';
import {
  defaultFleetLivenessSettings,
  type FleetLivenessSettings,
  type FleetLivenessState,
  type RemediationAnswer,
  type RemediationGrant,
  type RemediationRequest,
} from './definitions.js';
import { markdownLiteral } from './operator-view.js';

export function initialFleetLivenessState(settings: Partial<FleetLivenessSettings> = {}): FleetLivenessState {
  return {
    settings: configuredSettings(defaultFleetLivenessSettings, settings),
    sweeps: 0,
    lastSweep: null,
    lastFailure: null,
    totals: { expiredFound: 0, signalled: 0, granted: 0, refused: 0 },
    runs: 0,
    disruption: null,
    lastDisruption: null,
    notBefore: null,
    recentVerdicts: [],
    remediation: { tokens: 0, at: null },
    paused: null,
  };
}

/**
 * The state a run starts with after continue-as-new: the carried one, what it lacks (carried by
 * a build without it) from the initial state, with these settings applied.
 */
export function carriedFleetLivenessState(
  carried: FleetLivenessState,
  settings: Partial<FleetLivenessSettings>,
): FleetLivenessState {
  const initial = initialFleetLivenessState();
  const state: FleetLivenessState = { ...initial, ...carried, totals: { ...initial.totals, ...carried.totals } };
  return { ...state, settings: configuredSettings({ ...initial.settings, ...carried.settings }, settings) };
}

/** Settings as asked, each kept only if valid: a share in (0, 1], the others positive whole numbers. */
export function configuredSettings(
  current: FleetLivenessSettings,
  asked: Partial<FleetLivenessSettings>,
): FleetLivenessSettings {
  const whole = (value: unknown): value is number =>
    typeof value === 'number' && Number.isSafeInteger(value) && value > 0;
  const share = (value: unknown): value is number =>
    typeof value === 'number' && Number.isFinite(value) && value > 0 && value <= 1;
  return {
    sweepEveryMs: whole(asked.sweepEveryMs) ? asked.sweepEveryMs : current.sweepEveryMs,
    batch: whole(asked.batch) ? asked.batch : current.batch,
    disruptionShare: share(asked.disruptionShare) ? asked.disruptionShare : current.disruptionShare,
    disruptionMinLeases: whole(asked.disruptionMinLeases) ? asked.disruptionMinLeases : current.disruptionMinLeases,
    apiServingGraceMs: whole(asked.apiServingGraceMs) ? asked.apiServingGraceMs : current.apiServingGraceMs,
    remediationPerMinute: whole(asked.remediationPerMinute) ? asked.remediationPerMinute : current.remediationPerMinute,
  };
}

export interface SweepDecision {
  /** The leases to signal now, the longest silent first. */
  signal: ExpiredLease[];
  /** Expired leases left unsignalled for a later sweep: over the budget, beyond the batch, or paused. */
  held: number;
  /** The controller's state after the judgement (disruption, bucket), before the signals' outcome. */
  state: FleetLivenessState;
}

/**
 * Which of the expired leases found this sweep to signal, judged on the database's clock
 * (`found.now`):
 * - the leases silent within one TTL (expired now, or signalled within the last `maxTtlMs`) are
 *   more than `disruptionShare` of the watched ones and at least `disruptionMinLeases`, or no API
 *   process served for `apiServingGraceMs`: a disruption, nobody signalled;
 * - the first sweep after a disruption ends it and signals nobody: from then on every lease is
 *   silent only from its end (`notBefore`), so each workspace gets a full TTL after the observer
 *   recovers;
 * - paused by an operator: nobody signalled;
 * - otherwise up to the tokens in the bucket (`remediationPerMinute`, refilled continuously, at
 *   most a minute's worth), the longest silent first; the rest wait for a later sweep.
 */
export function sweepDecision(found: ExpiredLeases, state: FleetLivenessState): SweepDecision {
  const { settings } = state;
  const now = Date.parse(found.now);
  const recentVerdicts = state.recentVerdicts.filter((v) => Date.parse(v.at) > now - found.maxTtlMs);
  const silent = found.expired + recentVerdicts.reduce((sum, v) => sum + v.count, 0);
  const share = found.watched === 0 ? 0 : Math.min(1, silent / found.watched);
  const { servedAgeMs } = found;
  const apiSilentForMs = servedAgeMs !== null && servedAgeMs > settings.apiServingGraceMs ? servedAgeMs : null;
  const fleetSilent = silent >= settings.disruptionMinLeases && share > settings.disruptionShare;
  const judged = { ...state, recentVerdicts };
  if (fleetSilent || apiSilentForMs !== null) {
    const disruption = {
      since: state.disruption?.since ?? found.now,
      silent,
      watched: found.watched,
      share,
      apiSilentForMs,
    };
    return { signal: [], held: 0, state: { ...judged, disruption } };
  }
  if (state.disruption !== null)
    return {
      signal: [],
      held: 0,
      state: {
        ...judged,
        disruption: null,
        lastDisruption: { ...state.disruption, until: found.now },
        notBefore: found.now,
      },
    };
  const tokens = refilledTokens(state, now);
  if (state.paused !== null)
    return { signal: [], held: found.expired, state: { ...judged, remediation: spent(state, found.now, tokens, 0) } };
  const signal = found.leases.slice(0, Math.floor(tokens));
  return {
    signal,
    held: found.expired - signal.length,
    state: { ...judged, remediation: spent(state, found.now, tokens, signal.length) },
  };
}

/**
 * A dead verdict asked by a caller, judged like a sweep's signal: refused during a disruption (the
 * observer is suspected) or a pause, granted while the bucket holds a token, which it takes.
 * Refused verdicts are asked again by the caller's retry; nothing is queued here.
 */
export function grantRemediation(
  state: FleetLivenessState,
  request: RemediationRequest,
): { state: FleetLivenessState; grant: RemediationGrant } {
  const refuse = (reason: string) => ({
    state: { ...state, totals: { ...state.totals, refused: state.totals.refused + 1 } },
    grant: { granted: false as const, reason },
  });
  if (state.disruption !== null)
    return refuse(
      `fleet disruption since ${state.disruption.since}: the observer is suspected, nobody is declared dead`,
    );
  if (state.paused !== null) return refuse(`remediation paused by ${state.paused.by}: ${state.paused.reason}`);
  const now = Date.parse(request.now);
  const tokens = refilledTokens(state, now);
  if (tokens < 1)
    return refuse(`the fleet's remediation budget (${state.settings.remediationPerMinute} a minute) is spent`);
  return {
    state: {
      ...state,
      remediation: spent(state, request.now, tokens, 1),
      totals: { ...state.totals, granted: state.totals.granted + 1 },
    },
    grant: { granted: true },
  };
}

/** The bucket's tokens at `now`: a full minute's worth at first, refilled at the configured rate, never above it. */
function refilledTokens(state: FleetLivenessState, now: number): number {
  const { remediation, settings } = state;
  const capacity = settings.remediationPerMinute;
  if (remediation.at === null) return capacity;
  const elapsedMs = Math.max(0, now - Date.parse(remediation.at));
  return Math.min(capacity, remediation.tokens + (elapsedMs * capacity) / 60_000);
}

/**
 * The bucket after `count` tokens of the `tokens` refilled up to `now` are spent. Its time never
 * goes back: a grant between a sweep's query and its decision is not refilled twice.
 */
function spent(
  state: FleetLivenessState,
  now: string,
  tokens: number,
  count: number,
): FleetLivenessState['remediation'] {
  const { at } = state.remediation;
  return { tokens: tokens - count, at: at !== null && Date.parse(at) > Date.parse(now) ? at : now };
}

export function recordSweep(
  state: FleetLivenessState,
  at: string,
  found: ExpiredLeases,
  told: SignalledLeases,
  held = 0,
): FleetLivenessState {
  return {
    ...state,
    sweeps: state.sweeps + 1,
    lastSweep: { at, watched: found.watched, expired: found.expired, ...told, held },
    totals: {
      ...state.totals,
      expiredFound: state.totals.expiredFound + found.expired,
      signalled: state.totals.signalled + told.signalled,
    },
    recentVerdicts:
      told.signalled > 0 ? [...state.recentVerdicts, { at: found.now, count: told.signalled }] : state.recentVerdicts,
  };
}

export function recordSweepFailure(state: FleetLivenessState, at: string, error: string): FleetLivenessState {
  return { ...state, lastFailure: { at, error } };
}

/** An operator holds automatic remediation, with a reason; a second pause keeps the first. */
export function pauseRemediation(
  state: FleetLivenessState,
  request: { reason: string; by: string },
  at: string,
): { state: FleetLivenessState; answer: RemediationAnswer } {
  if (state.paused !== null) return { state, answer: { outcome: 'already-paused', paused: state.paused } };
  const paused = { reason: request.reason, by: request.by, since: at };
  return { state: { ...state, paused }, answer: { outcome: 'paused', paused } };
}

/** An operator lets automatic remediation go on; the expired leases are signalled at the budget's rate. */
export function resumeRemediation(state: FleetLivenessState): { state: FleetLivenessState; answer: RemediationAnswer } {
  if (state.paused === null) return { state, answer: { outcome: 'not-paused', paused: null } };
  return { state: { ...state, paused: null }, answer: { outcome: 'resumed', paused: null } };
}

const percent = (share: number): string => `${Math.round(share * 100)}%`;

/** The controller's current details in the Web UI, markdown. */
export function fleetLivenessDetails(state: FleetLivenessState): string {
  const { lastSweep, lastFailure, settings, totals, disruption, paused } = state;
  const lines: string[] = [];
  if (disruption !== null)
    lines.push(
      `**Disruption** since ${disruption.since}: ${disruption.silent} of ${disruption.watched} leases ` +
        `(${percent(disruption.share)}) silent within one TTL` +
        (disruption.apiSilentForMs === null
          ? ''
          : `, no API process served for ${Math.round(disruption.apiSilentForMs / 1000)}s`) +
        '; the observer is suspected, nobody is signalled',
    );
  if (paused !== null)
    lines.push(
      `**Remediation paused** by ${markdownLiteral(paused.by)}: ${markdownLiteral(paused.reason)} since ${paused.since}`,
    );
  lines.push(
    lastSweep === null
      ? '**Last sweep:** none yet'
      : `**Last sweep:** ${lastSweep.at}: ${lastSweep.watched} leases watched, ${lastSweep.expired} expired found, ` +
          `${lastSweep.signalled} signalled` +
          (lastSweep.gone > 0 ? `, ${lastSweep.gone} without a running workflow` : '') +
          (lastSweep.failed > 0 ? `, ${lastSweep.failed} not reached (next sweep)` : '') +
          (lastSweep.held > 0 ? `, ${lastSweep.held} held (next sweeps)` : ''),
    `**Sweeps:** ${state.sweeps}, every ${settings.sweepEveryMs / 1000}s, at most ${settings.batch} signals each, ` +
      `${settings.remediationPerMinute} a minute; ${totals.expiredFound} expired found, ${totals.signalled} signalled in all` +
      (totals.granted + totals.refused > 0
        ? `; callers' dead verdicts: ${totals.granted} granted, ${totals.refused} refused`
        : ''),
  );
  if (state.lastDisruption !== null)
    lines.push(
      `**Last disruption:** ${state.lastDisruption.since} to ${state.lastDisruption.until}; ` +
        'leases are silent only from its end',
    );
  if (lastFailure !== null && (lastSweep === null || lastFailure.at > lastSweep.at))
    lines.push(`**Sweep failed** at ${lastFailure.at}: ${markdownLiteral(lastFailure.error)} (no sweep, no verdict)`);
  return lines.join('\n\n');
}
