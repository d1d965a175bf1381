/**
 * The fleet liveness controller suspects the observer (workflows/fleet-sweep.ts) on the
 * time-skipping test server, with its own worker and ledger so the fleet is only this file's
 * workspaces: a fleet silent at once is a disruption, not a fleet of dead workspaces.
 */
import type { WorkflowHandle } from '@temporalio/client';
import { beforeAll, describe, expect, it } from 'vitest';
import { startFleetLiveness } from '../../worker.js';
import { defaultLifecycleConfig as config } from '../../workflows/config.js';
import { FLEET_LIVENESS_WORKFLOW_ID, fleetLivenessStateQuery, stateQuery } from '../../workflows/definitions.js';
import { createTimeSkippingEnv } from '../helpers/env.js';
import { heartbeatPayload } from '../helpers/payloads.js';
import { contractPublished, registeredWorkspace, useWorkerHarness, waitForState } from '../helpers/worker.js';

const harness = useWorkerHarness('fleet-disruption-tests', createTimeSkippingEnv);
const SWEEP_EVERY_MS = 5_000;

beforeAll(async () => {
  await startFleetLiveness(harness.env.client, harness.taskQueue, { sweepEveryMs: SWEEP_EVERY_MS });
});

const controller = () => harness.env.client.workflow.getHandle(FLEET_LIVENESS_WORKFLOW_ID);
const leaseExpiries = (id: string): number =>
  harness.fake.projections.filter((p) => p.workspaceId === id && p.status === 'offline').length;

async function fleetOf(n: number): Promise<{ id: string; handle: WorkflowHandle }[]> {
  const fleet = [];
  for (let i = 0; i < n; i++) {
    const workspace = await registeredWorkspace(harness, 'fd');
    await contractPublished(harness, workspace.id, workspace.handle);
    fleet.push(workspace);
  }
  return fleet;
}

async function beat(fleet: { id: string; handle: WorkflowHandle }[]): Promise<void> {
  for (const { id, handle } of fleet) expect(await harness.fake.heartbeat(handle, heartbeatPayload(id))).toBe(false);
}

describe('fleet disruption', () => {
  it('a fleet silent at once is a disruption: nobody declared dead; heartbeats return: no verdict; a lone silent workspace afterwards goes offline a TTL after it ended', async () => {
    const fleet = await fleetOf(4);
    await beat(fleet);
    // Every lease expires at once, and stays silent for three TTLs.
    await harness.env.sleep(3 * config.livenessTtlMs);
    const disrupted = await controller().query(fleetLivenessStateQuery);
    expect(disrupted.disruption).toMatchObject({ silent: 4, watched: 4, share: 1 });
    expect(disrupted.totals.signalled).toBe(0);
    for (const { id, handle } of fleet) {
      expect((await handle.query(stateQuery)).status).toBe('online');
      expect(leaseExpiries(id)).toBe(0);
    }
    expect(harness.fake.restarts).toEqual([]);

    // Heartbeats return, all but one: the disruption ends, with no verdict.
    const [silentOne, ...beating] = fleet;
    if (silentOne === undefined) throw new Error('no fleet');
    await beat(beating);
    await harness.env.sleep(2 * SWEEP_EVERY_MS);
    const ended = await controller().query(fleetLivenessStateQuery);
    expect(ended.disruption).toBeNull();
    expect(ended.lastDisruption).not.toBeNull();
    expect(ended.notBefore).toBe(ended.lastDisruption?.until);
    expect(ended.totals.signalled).toBe(0);

    // The silent one gets a full TTL from the end of the disruption (its last heartbeat is three
    // TTLs old), then goes offline.
    for (let elapsed = 30_000; elapsed <= config.livenessTtlMs - 30_000; elapsed += 30_000) {
      await beat(beating);
      await harness.env.sleep(30_000);
    }
    expect((await silentOne.handle.query(stateQuery)).status).toBe('online');
    await beat(beating);
    await harness.env.sleep(6 * SWEEP_EVERY_MS);
    const offline = await waitForState(silentOne.handle, (s) => s.status === 'offline');
    expect(offline.recentTransitions[0]?.cause).toMatch(/^no heartbeat for 18\ds$/);
    for (const { handle } of beating) expect((await handle.query(stateQuery)).status).toBe('online');
    const after = await controller().query(fleetLivenessStateQuery);
    expect(after.disruption).toBeNull();
    expect(after.totals.signalled).toBe(1);
  });
});
