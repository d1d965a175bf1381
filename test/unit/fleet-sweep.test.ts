/**
 * The fleet liveness controller's pure part (workflows/fleet-sweep.ts): settings, the sweep's
 * judgement (disruption, remediation budget, pause), what a sweep records, its view.
 */
import { describe, expect, it } from 'vitest';
import type { ExpiredLeases } from '../../db/tables/heartbeat-ledger.js';
import type { FleetLivenessState } from '../../workflows/definitions.js';
import {
  carriedFleetLivenessState,
  configuredSettings,
  fleetLivenessDetails,
  grantRemediation,
  initialFleetLivenessState,
  pauseRemediation,
  recordSweep,
  recordSweepFailure,
  resumeRemediation,
  sweepDecision,
} from '../../workflows/fleet-sweep.js';

const T0 = Date.parse('2026-01-01T00:00:00.000Z');
const at = (ms: number): string => new Date(T0 + ms).toISOString();

const found: ExpiredLeases = {
  now: at(5_000),
  watched: 12,
  maxTtlMs: 180_000,
  servedAgeMs: 1_000,
  expired: 2,
  leases: [
    { workspaceId: 'a', version: 7, silentForMs: 200_000 },
    { workspaceId: 'b', version: 3, silentForMs: 181_000 },
  ],
};

/** `expired` leases of `watched` found expired at `ms`. */
function sweepOf(ms: number, watched: number, expired: number, servedAgeMs: number | null = 1_000): ExpiredLeases {
  const leases = Array.from({ length: expired }, (_, i) => ({
    workspaceId: `w${i}`,
    version: 1,
    silentForMs: 181_000 + expired - i,
  }));
  return { now: at(ms), watched, maxTtlMs: 180_000, servedAgeMs, expired, leases };
}

/** Runs the decision and records every lease chosen as told. */
function swept(state: FleetLivenessState, sweep: ExpiredLeases): { state: FleetLivenessState; signalled: number } {
  const decided = sweepDecision(sweep, state);
  const told = { signalled: decided.signal.length, gone: 0, failed: 0 };
  return {
    state: recordSweep(decided.state, sweep.now, sweep, told, decided.held),
    signalled: decided.signal.length,
  };
}

describe('fleet sweep', () => {
  it('keeps only valid settings, each on its own', () => {
    const start = initialFleetLivenessState();
    expect(start.settings).toEqual({
      sweepEveryMs: 5_000,
      batch: 1_000,
      disruptionShare: 0.5,
      disruptionMinLeases: 3,
      apiServingGraceMs: 30_000,
      remediationPerMinute: 60,
    });
    expect(configuredSettings(start.settings, { sweepEveryMs: 2_000, disruptionShare: 0.3 })).toEqual({
      ...start.settings,
      sweepEveryMs: 2_000,
      disruptionShare: 0.3,
    });
    for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])
      expect(
        configuredSettings(start.settings, {
          sweepEveryMs: bad,
          batch: bad,
          disruptionShare: bad,
          disruptionMinLeases: bad,
          apiServingGraceMs: bad,
          remediationPerMinute: bad,
        }),
      ).toEqual(start.settings);
  });

  it('a state carried by a build without the disruption fields gets them, and the settings asked', () => {
    const added = ['disruption', 'lastDisruption', 'notBefore', 'recentVerdicts', 'remediation', 'paused'];
    const old = Object.fromEntries(
      Object.entries({ ...initialFleetLivenessState(), sweeps: 9 }).filter(([key]) => !added.includes(key)),
    );
    const settings = { sweepEveryMs: 5_000, batch: 1_000 } as FleetLivenessState['settings'];
    const carried = carriedFleetLivenessState({ ...old, settings } as FleetLivenessState, { batch: 10 });
    expect(carried).toMatchObject({ sweeps: 9, disruption: null, notBefore: null, recentVerdicts: [], paused: null });
    expect(carried.settings.batch).toBe(10);
    expect(carried.settings.remediationPerMinute).toBe(60);
  });

  it('signals every expired lease found within the budget, and records the sweep and its totals', () => {
    const state = initialFleetLivenessState();
    expect(sweepDecision(found, state).signal).toEqual(found.leases);
    const once = recordSweep(state, '2026-01-01T00:00:05.000Z', found, { signalled: 1, gone: 1, failed: 0 });
    const twice = recordSweep(once, '2026-01-01T00:00:10.000Z', found, { signalled: 2, gone: 0, failed: 0 });
    expect(twice).toMatchObject({ sweeps: 2, totals: { expiredFound: 4, signalled: 3 } });
    expect(twice.lastSweep).toEqual({
      at: '2026-01-01T00:00:10.000Z',
      watched: 12,
      expired: 2,
      signalled: 2,
      gone: 0,
      failed: 0,
      held: 0,
    });
  });

  it('more than the share of the fleet silent at once: a disruption, nobody signalled; it ends when the share drops, and leases are silent only from its end', () => {
    let state = initialFleetLivenessState();
    const disrupted = sweepDecision(sweepOf(5_000, 10, 6), state);
    expect(disrupted.signal).toEqual([]);
    expect(disrupted.state.disruption).toEqual({
      since: at(5_000),
      silent: 6,
      watched: 10,
      share: 0.6,
      apiSilentForMs: null,
    });
    state = recordSweep(disrupted.state, at(5_000), sweepOf(5_000, 10, 6), { signalled: 0, gone: 0, failed: 0 });
    // Still disrupted: the start stays, the figures follow the sweep.
    state = swept(state, sweepOf(10_000, 10, 9)).state;
    expect(state.disruption).toMatchObject({ since: at(5_000), silent: 9, share: 0.9 });
    expect(fleetLivenessDetails(state)).toContain(
      `**Disruption** since ${at(5_000)}: 9 of 10 leases (90%) silent within one TTL; the observer is suspected, nobody is signalled`,
    );
    // Heartbeats return: two leases still expired, under the share. The ending sweep signals nobody.
    const ended = sweepDecision(sweepOf(60_000, 10, 2), state);
    expect(ended.signal).toEqual([]);
    expect(ended.state).toMatchObject({
      disruption: null,
      notBefore: at(60_000),
      lastDisruption: { since: at(5_000), until: at(60_000) },
    });
    expect(fleetLivenessDetails(ended.state)).toContain(`**Last disruption:** ${at(5_000)} to ${at(60_000)}`);
    // Afterwards a lease silent past its TTL from the end is signalled again.
    expect(sweepDecision(sweepOf(245_000, 10, 1), ended.state).signal).toHaveLength(1);
  });

  it('the share is exceeded, not reached, and a fleet smaller than the minimum is never disrupted', () => {
    const state = initialFleetLivenessState();
    expect(sweepDecision(sweepOf(5_000, 10, 5), state).signal).toHaveLength(5);
    expect(sweepDecision(sweepOf(5_000, 2, 2), state)).toMatchObject({ state: { disruption: null } });
    expect(sweepDecision(sweepOf(5_000, 2, 2), state).signal).toHaveLength(2);
    expect(sweepDecision(sweepOf(5_000, 4, 3), state).state.disruption).not.toBeNull();
    const small = { ...state, settings: { ...state.settings, disruptionMinLeases: 5 } };
    expect(sweepDecision(sweepOf(5_000, 4, 4), small).state.disruption).toBeNull();
  });

  it('leases signalled within the last TTL count toward the share; older ones do not', () => {
    let state = initialFleetLivenessState();
    state = swept(state, sweepOf(5_000, 10, 4)).state; // 4 signalled, under the share
    expect(state.disruption).toBeNull();
    // Two more silent a minute later: 6 of 10 within one TTL.
    expect(sweepDecision(sweepOf(65_000, 10, 2), state).state.disruption).toMatchObject({ silent: 6, share: 0.6 });
    // The same two more than a TTL after the first four: judged alone.
    const later = sweepDecision(sweepOf(190_000, 10, 2), state);
    expect(later.state.disruption).toBeNull();
    expect(later.signal).toHaveLength(2);
    expect(later.state.recentVerdicts).toEqual([]);
  });

  it('no API process served for longer than the grace: a disruption, even with few leases expired', () => {
    const state = initialFleetLivenessState();
    const apiDown = sweepDecision(sweepOf(5_000, 10, 1, 31_000), state);
    expect(apiDown.signal).toEqual([]);
    expect(apiDown.state.disruption).toMatchObject({ apiSilentForMs: 31_000, silent: 1 });
    expect(fleetLivenessDetails(apiDown.state)).toContain('no API process served for 31s');
    expect(sweepDecision(sweepOf(5_000, 10, 1, 30_000), state).signal).toHaveLength(1);
    // No API ever served: nothing to suspect.
    expect(sweepDecision(sweepOf(5_000, 10, 1, null), state).signal).toHaveLength(1);
    // Serving again: the disruption ends, and the lease clock starts from then.
    const back = sweepDecision(sweepOf(40_000, 10, 1, 2_000), apiDown.state);
    expect(back).toMatchObject({ signal: [], state: { disruption: null, notBefore: at(40_000) } });
  });

  it('signals at most the budget a minute, fleet-wide; the rest wait, and the bucket refills at the rate', () => {
    let state = initialFleetLivenessState({ remediationPerMinute: 10, disruptionShare: 1 });
    const first = sweepDecision(sweepOf(0, 100, 25), state);
    expect(first.signal.map((l) => l.workspaceId)).toEqual([
      'w0',
      'w1',
      'w2',
      'w3',
      'w4',
      'w5',
      'w6',
      'w7',
      'w8',
      'w9',
    ]);
    expect(first.held).toBe(15);
    state = first.state;
    // 30 s later: five tokens.
    const second = sweepDecision(sweepOf(30_000, 100, 15), state);
    expect(second.signal).toHaveLength(5);
    expect(second.held).toBe(10);
    state = second.state;
    // 6 s later: one token; an hour later, never more than a minute's worth.
    expect(sweepDecision(sweepOf(36_000, 100, 10), state).signal).toHaveLength(1);
    expect(sweepDecision(sweepOf(3_636_000, 100, 30), state).signal).toHaveLength(10);
    const recorded = recordSweep(
      second.state,
      at(30_000),
      sweepOf(30_000, 100, 15),
      {
        signalled: 5,
        gone: 0,
        failed: 0,
      },
      second.held,
    );
    expect(fleetLivenessDetails(recorded)).toContain('5 signalled, 10 held (next sweeps)');
  });

  it('paused: nobody signalled, the pause shown with who and why; resumed: the budget goes on', () => {
    const start = initialFleetLivenessState();
    const paused = pauseRemediation(start, { reason: 'database failover', by: 'ops@example' }, at(0));
    expect(paused.answer).toEqual({
      outcome: 'paused',
      paused: { reason: 'database failover', by: 'ops@example', since: at(0) },
    });
    expect(pauseRemediation(paused.state, { reason: 'other', by: 'b' }, at(1)).answer).toMatchObject({
      outcome: 'already-paused',
      paused: { reason: 'database failover' },
    });
    const held = sweepDecision(sweepOf(5_000, 10, 2), paused.state);
    expect(held).toMatchObject({ signal: [], held: 2 });
    expect(fleetLivenessDetails(paused.state)).toContain(
      `**Remediation paused** by \` ops@example \`: \` database failover \` since ${at(0)}`,
    );
    const resumed = resumeRemediation(held.state);
    expect(resumed.answer).toEqual({ outcome: 'resumed', paused: null });
    expect(resumeRemediation(resumed.state).answer).toEqual({ outcome: 'not-paused', paused: null });
    expect(sweepDecision(sweepOf(10_000, 10, 2), resumed.state).signal).toHaveLength(2);
  });

  it("callers' dead verdicts take the sweeps' tokens: granted while the bucket holds one, refused once spent, again as it refills", () => {
    let state = initialFleetLivenessState({ remediationPerMinute: 3 });
    const ask = (ms: number) => {
      const asked = grantRemediation(state, { workspaceId: 'w', requester: 'dispatcher', now: at(ms) });
      state = asked.state;
      return asked.grant;
    };
    expect([ask(0), ask(0), ask(0)]).toEqual([{ granted: true }, { granted: true }, { granted: true }]);
    expect(ask(1_000)).toEqual({ granted: false, reason: "the fleet's remediation budget (3 a minute) is spent" });
    // 20 s refill one token: a sweep then signals one lease, and the next caller waits again.
    expect(sweepDecision(sweepOf(21_000, 100, 5), state).signal).toHaveLength(1);
    expect(ask(21_000)).toEqual({ granted: true });
    expect(sweepDecision(sweepOf(21_000, 100, 5), state).signal).toHaveLength(0);
    expect(state.totals).toMatchObject({ granted: 4, refused: 1 });
    expect(fleetLivenessDetails(state)).toContain("callers' dead verdicts: 4 granted, 1 refused");
    // A sweep whose query ran before the last grant does not move the bucket's time back.
    const swept = sweepDecision(sweepOf(20_000, 100, 0), state).state;
    expect(swept.remediation.at).toBe(at(21_000));
  });

  it("callers' dead verdicts are refused during a disruption and a pause, and say why", () => {
    const request = { workspaceId: 'w', requester: 'dispatcher', now: at(5_000) };
    const disrupted = sweepDecision(sweepOf(5_000, 10, 9), initialFleetLivenessState()).state;
    expect(grantRemediation(disrupted, request).grant).toEqual({
      granted: false,
      reason: `fleet disruption since ${at(5_000)}: the observer is suspected, nobody is declared dead`,
    });
    const paused = pauseRemediation(initialFleetLivenessState(), { reason: 'failover', by: 'ops' }, at(0)).state;
    expect(grantRemediation(paused, request).grant).toEqual({
      granted: false,
      reason: 'remediation paused by ops: failover',
    });
    expect(grantRemediation(resumeRemediation(paused).state, request).grant).toEqual({ granted: true });
  });

  it('shows the last sweep, and a failure newer than it, in its current details', () => {
    const recorded = recordSweep(initialFleetLivenessState(), '2026-01-01T00:00:05.000Z', found, {
      signalled: 1,
      gone: 0,
      failed: 1,
    });
    const details = fleetLivenessDetails(recorded);
    expect(details).toContain('12 leases watched, 2 expired found, 1 signalled, 1 not reached (next sweep)');
    expect(details).not.toContain('Sweep failed');
    const failed = recordSweepFailure(recorded, '2026-01-01T00:00:10.000Z', 'connect ECONNREFUSED *db*');
    expect(fleetLivenessDetails(failed)).toContain('**Sweep failed** at 2026-01-01T00:00:10.000Z');
    expect(fleetLivenessDetails(failed)).toContain('(no sweep, no verdict)');
    expect(fleetLivenessDetails(failed)).toContain('` connect ECONNREFUSED *db* `'); // literal, not markdown
  });
});
