/** The fleet liveness controller's pure part (workflows/fleet-sweep.ts): settings, what a sweep records, its view. */
import { describe, expect, it } from 'vitest';
import {
  configuredSettings,
  fleetLivenessDetails,
  initialFleetLivenessState,
  recordSweep,
  recordSweepFailure,
  sweepDecision,
} from '../../workflows/fleet-sweep.js';

const found = {
  watched: 12,
  expired: 2,
  leases: [
    { workspaceId: 'a', version: 7, silentForMs: 200_000 },
    { workspaceId: 'b', version: 3, silentForMs: 181_000 },
  ],
};

describe('fleet sweep', () => {
  it('keeps only positive whole settings, each on its own', () => {
    const start = initialFleetLivenessState();
    expect(start.settings).toEqual({ sweepEveryMs: 5_000, batch: 1_000 });
    expect(configuredSettings(start.settings, { sweepEveryMs: 2_000 })).toEqual({ sweepEveryMs: 2_000, batch: 1_000 });
    for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])
      expect(configuredSettings(start.settings, { sweepEveryMs: bad, batch: bad })).toEqual(start.settings);
  });

  it('signals every expired lease found, and records the sweep and its totals', () => {
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
    });
  });

  it('shows the last sweep, and a failure newer than it, in its current details', () => {
    const swept = recordSweep(initialFleetLivenessState(), '2026-01-01T00:00:05.000Z', found, {
      signalled: 1,
      gone: 0,
      failed: 1,
    });
    const details = fleetLivenessDetails(swept);
    expect(details).toContain('12 leases watched, 2 expired found, 1 signalled, 1 not reached (next sweep)');
    expect(details).not.toContain('Sweep failed');
    const failed = recordSweepFailure(swept, '2026-01-01T00:00:10.000Z', 'connect ECONNREFUSED *db*');
    expect(fleetLivenessDetails(failed)).toContain('**Sweep failed** at 2026-01-01T00:00:10.000Z');
    expect(fleetLivenessDetails(failed)).toContain('(no sweep, no verdict)');
    expect(fleetLivenessDetails(failed)).toContain('` connect ECONNREFUSED *db* `'); // literal, not markdown
  });
});
