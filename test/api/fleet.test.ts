/**
 * The fleet routes (api/routes/fleet.ts): the fleet liveness controller's state, and pausing and
 * resuming its remediation as Updates answered with what they did, against the real time-skipping
 * Temporal server, a real worker and real PostgreSQL.
 */
import { describe, expect, it } from 'vitest';
import { startFleetLiveness } from '../../worker.js';
import { FLEET_LIVENESS_WORKFLOW_ID } from '../../workflows/definitions.js';
import { admin, useApiHarness } from '../helpers/api.js';

const harness = useApiHarness('fleet-tests');

describe('fleet routes', () => {
  it('shows the controller, pauses and resumes its remediation with who and why, and refuses what is not an operator request', async () => {
    const absent = await harness.api.inject({ method: 'GET', url: '/fleet', headers: admin });
    expect(absent.statusCode, absent.body).toBe(503);
    expect(absent.json<{ error: string }>().error).toMatch(/fleet liveness controller is not running: start a worker/);

    await startFleetLiveness(harness.env.client, harness.taskQueue, { sweepEveryMs: 60_000 });
    const fleet = await harness.api.inject({ method: 'GET', url: '/fleet', headers: admin });
    expect(fleet.statusCode, fleet.body).toBe(200);
    expect(fleet.json()).toMatchObject({
      disruption: null,
      paused: null,
      settings: { sweepEveryMs: 60_000, disruptionShare: 0.5, remediationPerMinute: 60 },
    });

    const pause = (payload: unknown, headers: Record<string, string> = admin) =>
      harness.api.inject({ method: 'POST', url: '/fleet/pause', headers, payload: payload as object });
    expect((await pause({ reason: 'db failover', by: 'ops' }, {})).statusCode).toBe(401);
    for (const bad of [
      {},
      { by: 'ops' },
      { reason: '', by: 'ops' },
      { reason: '   ', by: 'ops' },
      { reason: 'x'.repeat(501), by: 'ops' },
      { reason: 'db failover', by: 'ops\u0000' },
      { reason: 'db failover', by: 'ops', extra: true },
    ]) {
      const refused = await pause(bad);
      expect(refused.statusCode, JSON.stringify(bad)).toBe(400);
      expect(refused.json<{ issues: unknown[] }>().issues.length).toBeGreaterThan(0);
    }

    const paused = await pause({ reason: 'database failover', by: 'ops@example' });
    expect(paused.statusCode, paused.body).toBe(200);
    expect(paused.json()).toEqual({
      outcome: 'paused',
      paused: { reason: 'database failover', by: 'ops@example', since: expect.any(String) as string },
    });
    const again = await pause({ reason: 'something else', by: 'other' });
    expect(again.json()).toMatchObject({ outcome: 'already-paused', paused: { reason: 'database failover' } });
    // The gauges, read from the controller at the first scrape.
    expect(await harness.metric('workspace_remediation_paused')).toBe(1);
    const scrape = await harness.api.inject({ method: 'GET', url: '/metrics' });
    expect(scrape.body).toMatch(/^workspace_fleet_disruption 0$/m);
    const shown = await harness.api.inject({ method: 'GET', url: '/fleet', headers: admin });
    expect(shown.json()).toMatchObject({ paused: { reason: 'database failover', by: 'ops@example' } });

    const resume = () =>
      harness.api.inject({ method: 'POST', url: '/fleet/resume', headers: admin, payload: { by: 'ops@example' } });
    expect((await resume()).json()).toEqual({ outcome: 'resumed', paused: null });
    expect((await resume()).json()).toEqual({ outcome: 'not-paused', paused: null });
    const badResume = await harness.api.inject({ method: 'POST', url: '/fleet/resume', headers: admin, payload: {} });
    expect(badResume.statusCode).toBe(400);
    expect((await harness.api.inject({ method: 'GET', url: '/fleet', headers: admin })).json()).toMatchObject({
      paused: null,
    });
  });

  it('a controller whose run was terminated is not running: GET /fleet says so, not its last state', async () => {
    await startFleetLiveness(harness.env.client, harness.taskQueue, { sweepEveryMs: 60_000 });
    expect((await harness.api.inject({ method: 'GET', url: '/fleet', headers: admin })).statusCode).toBe(200);
    await harness.env.client.workflow.getHandle(FLEET_LIVENESS_WORKFLOW_ID).terminate('an operator stopped it');
    const closed = await harness.api.inject({ method: 'GET', url: '/fleet', headers: admin });
    expect(closed.statusCode, closed.body).toBe(503);
    expect(closed.headers['retry-after']).toBe('15');
    expect(closed.json<{ error: string }>().error).toMatch(
      /fleet liveness controller is not running: start a worker.*last run is terminated/,
    );
  });
});
