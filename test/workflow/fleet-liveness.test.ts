/**
 * The fleet liveness controller (workflows/fleet-liveness.ts) on the time-skipping test server:
 * its sweep finds the leases that expired in the heartbeat ledger (a model on the database's
 * clock, FakeActivities) and signals those workspaces, which apply their own rules. With it, the
 * cases of issue 29 about silence: a database clock off by a minute (case 5) and a database that
 * cannot be reached while Temporal can (case 6).
 */
import type { WorkflowHandle } from '@temporalio/client';
import { beforeAll, describe, expect, it } from 'vitest';
import { startFleetLiveness } from '../../worker.js';
import { defaultLifecycleConfig as config } from '../../workflows/config.js';
import {
  dispatchFailedUpdate,
  FLEET_LIVENESS_WORKFLOW_ID,
  fleetLivenessStateQuery,
  stateQuery,
} from '../../workflows/definitions.js';
import { createTimeSkippingEnv } from '../helpers/env.js';
import { heartbeatPayload } from '../helpers/payloads.js';
import { contractPublished, registeredWorkspace, useWorkerHarness, waitForState } from '../helpers/worker.js';

const harness = useWorkerHarness('fleet-liveness-tests', createTimeSkippingEnv);
const SWEEP_EVERY_MS = 5_000;

// The workspaces of these tests stay silent once they are done with, so most of this small
// fleet is silent: a share of 1 judges each lease on its own (fleet-disruption.test.ts judges the fleet).
beforeAll(async () => {
  await startFleetLiveness(harness.env.client, harness.taskQueue, { sweepEveryMs: SWEEP_EVERY_MS, disruptionShare: 1 });
});

const controller = () => harness.env.client.workflow.getHandle(FLEET_LIVENESS_WORKFLOW_ID);
const probesOf = (id: string): number => harness.fake.probes.filter((p) => p === id).length;

/** An online workspace (registered) whose contract is in the ledger, and whose box probes running. */
async function onlineWorkspace(): Promise<{ id: string; handle: WorkflowHandle }> {
  const workspace = await registeredWorkspace(harness, 'fl');
  await contractPublished(harness, workspace.id, workspace.handle);
  return workspace;
}

describe('fleet liveness controller', () => {
  it('signals a lease that expired, once for its contract; the workspace goes offline and is evaluated', async () => {
    const { id, handle } = await onlineWorkspace();
    expect(await harness.fake.heartbeat(handle, heartbeatPayload(id))).toBe(false); // only recorded
    await harness.env.sleep(config.livenessTtlMs - SWEEP_EVERY_MS);
    expect((await handle.query(stateQuery)).status).toBe('online');
    await harness.env.sleep(2 * SWEEP_EVERY_MS);
    const offline = await waitForState(handle, (s) => s.status === 'offline' && s.deadDetection.lastVerdict !== null);
    expect(offline.deadDetection.lastVerdict).toMatchObject({ verdict: 'alive', requester: 'watchdog' });
    const swept = await controller().query(fleetLivenessStateQuery);
    expect(swept.totals.signalled).toBeGreaterThanOrEqual(1);
    expect(swept.lastSweep).not.toBeNull();
    expect(swept.lastFailure).toBeNull();
    // The lease of the offline contract: a TTL more of silence restarts the box, once.
    await harness.env.sleep(config.livenessTtlMs + 2 * SWEEP_EVERY_MS);
    const restarted = await waitForState(handle, (s) => s.restart.count === 1 && !s.restart.inFlight);
    expect(restarted.restart.lastRequester).toBe('watchdog');
    expect(harness.fake.restarts.filter((r) => r.startsWith(`${id}/`))).toHaveLength(1);
  });

  it('a healthy workspace whose heartbeats are only recorded is never signalled, and its workflow runs no task', async () => {
    const { id, handle } = await onlineWorkspace();
    const { events: before } = await handle.fetchHistory();
    for (let i = 0; i < 20; i++) {
      expect(await harness.fake.heartbeat(handle, heartbeatPayload(id))).toBe(false);
      await harness.env.sleep(30_000);
    }
    expect((await handle.query(stateQuery)).status).toBe('online');
    const { events: after } = await handle.fetchHistory();
    const tasks = (events: typeof after) => (events ?? []).filter((e) => e.workflowTaskCompletedEventAttributes).length;
    expect(tasks(after)).toBe(tasks(before));
  });

  it('case 5: a database clock a minute ahead changes nothing: offline a TTL after the last heartbeat, within one sweep', async () => {
    harness.fake.databaseClockOffsetMs = 60_000;
    try {
      const { id, handle } = await onlineWorkspace();
      await harness.env.sleep(30_000);
      expect(await harness.fake.heartbeat(handle, heartbeatPayload(id))).toBe(false);
      await harness.env.sleep(config.livenessTtlMs - SWEEP_EVERY_MS);
      expect((await handle.query(stateQuery)).status).toBe('online');
      await harness.env.sleep(2 * SWEEP_EVERY_MS);
      await waitForState(handle, (s) => s.status === 'offline');
    } finally {
      harness.fake.databaseClockOffsetMs = 0;
    }
  });

  it('case 6: PostgreSQL unreachable, Temporal up: no sweep, no verdict; the lease runs from the last recorded heartbeat', async () => {
    const { id, handle } = await onlineWorkspace();
    await harness.env.sleep(100_000);
    expect(await harness.fake.heartbeat(handle, heartbeatPayload(id))).toBe(false); // recorded at 100 s
    await harness.env.sleep(10_000);
    // Sweeps that fail retry for real seconds: fewer of them while the database is away.
    await startFleetLiveness(harness.env.client, harness.taskQueue, { sweepEveryMs: 60_000 });
    harness.fake.databaseDown = true;
    try {
      await harness.env.sleep(config.livenessTtlMs + 20_000);
      expect((await handle.query(stateQuery)).status).toBe('online');
      expect(probesOf(id)).toBe(0);
      expect((await controller().query(fleetLivenessStateQuery)).lastFailure?.error).toMatch(/ECONNREFUSED/);
      // Dead detection reads the ledger first: without it, no verdict.
      const update = await handle.startUpdate(dispatchFailedUpdate, {
        args: [{ caller: 'test', error: 'connection refused' }],
        waitForStage: 'ACCEPTED',
      });
      await harness.env.sleep(30_000);
      expect(await update.result()).toEqual({
        verdict: 'queued',
        detail: 'heartbeat ledger unreachable: no verdict, retry later',
      });
      expect(probesOf(id)).toBe(0);
    } finally {
      harness.fake.databaseDown = false;
      await startFleetLiveness(harness.env.client, harness.taskQueue, { sweepEveryMs: SWEEP_EVERY_MS });
    }
    // The database is back: the lease expired 180 s after the heartbeat recorded at 100 s.
    await harness.env.sleep(60_000 + SWEEP_EVERY_MS);
    const offline = await waitForState(handle, (s) => s.status === 'offline');
    expect(offline.recentTransitions[0]?.cause).toBe('no heartbeat for 180s');
  });
});
