/**
 * The fleet liveness controller's decisions and view, pure: which expired leases a sweep signals,
 * what a sweep leaves in the controller's state, and what the Web UI shows of it. The workflow
 * (fleet-liveness.ts) runs the sweep's activities around them.
 */
import type { ExpiredLease, ExpiredLeases } from '../db/tables/heartbeat-ledger.js';
import type { SignalledLeases } from '../activities/fleet-liveness.js';
import { defaultFleetLivenessSettings, type FleetLivenessSettings, type FleetLivenessState } from './definitions.js';
import { markdownLiteral } from './operator-view.js';

export function initialFleetLivenessState(settings: Partial<FleetLivenessSettings> = {}): FleetLivenessState {
  return {
    settings: configuredSettings(defaultFleetLivenessSettings, settings),
    sweeps: 0,
    lastSweep: null,
    lastFailure: null,
    totals: { expiredFound: 0, signalled: 0 },
    runs: 0,
  };
}

/** Settings as asked, each kept only if it is a positive whole number. */
export function configuredSettings(
  current: FleetLivenessSettings,
  asked: Partial<FleetLivenessSettings>,
): FleetLivenessSettings {
  const valid = (value: unknown): value is number =>
    typeof value === 'number' && Number.isSafeInteger(value) && value > 0;
  return {
    sweepEveryMs: valid(asked.sweepEveryMs) ? asked.sweepEveryMs : current.sweepEveryMs,
    batch: valid(asked.batch) ? asked.batch : current.batch,
  };
}

/**
 * Which of the expired leases found this sweep signals: every one. The place for fleet-wide
 * judgement (a share of the fleet silent at once suspects the observer, not the fleet;
 * remediation at a bounded rate), with what it needs carried in the state.
 */
export function sweepDecision(found: ExpiredLeases, _state: FleetLivenessState): { signal: ExpiredLease[] } {
  return { signal: found.leases };
}

export function recordSweep(
  state: FleetLivenessState,
  at: string,
  found: ExpiredLeases,
  told: SignalledLeases,
): FleetLivenessState {
  return {
    ...state,
    sweeps: state.sweeps + 1,
    lastSweep: { at, watched: found.watched, expired: found.expired, ...told },
    totals: {
      expiredFound: state.totals.expiredFound + found.expired,
      signalled: state.totals.signalled + told.signalled,
    },
  };
}

export function recordSweepFailure(state: FleetLivenessState, at: string, error: string): FleetLivenessState {
  return { ...state, lastFailure: { at, error } };
}

/** The controller's current details in the Web UI, markdown. */
export function fleetLivenessDetails(state: FleetLivenessState): string {
  const { lastSweep, lastFailure, settings, totals } = state;
  const lines = [
    lastSweep === null
      ? '**Last sweep:** none yet'
      : `**Last sweep:** ${lastSweep.at}: ${lastSweep.watched} leases watched, ${lastSweep.expired} expired found, ` +
        `${lastSweep.signalled} signalled` +
        (lastSweep.gone > 0 ? `, ${lastSweep.gone} without a running workflow` : '') +
        (lastSweep.failed > 0 ? `, ${lastSweep.failed} not reached (next sweep)` : ''),
    `**Sweeps:** ${state.sweeps}, every ${settings.sweepEveryMs / 1000}s, at most ${settings.batch} signals each; ` +
      `${totals.expiredFound} expired found, ${totals.signalled} signalled in all`,
  ];
  if (lastFailure !== null && (lastSweep === null || lastFailure.at > lastSweep.at))
    lines.push(`**Sweep failed** at ${lastFailure.at}: ${markdownLiteral(lastFailure.error)} (no sweep, no verdict)`);
  return lines.join('\n\n');
}
