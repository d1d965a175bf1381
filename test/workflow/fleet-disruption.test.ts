/**
 * The fleet liveness controller suspects the observer (workflows/fleet-sweep.ts) on the
 * time-skipping test server, with its own worker and ledger so the fleet is only this file's
 * workspaces: a fleet silent at once, or an API that serves nobody, is a disruption, not a fleet
 * of dead workspaces; an operator's pause holds every verdict.
 */
import type { WorkflowHandle } from '@temporalio/client';
import { beforeAll, describe, expect, it } from 'vitest';
import { startFleetLiveness } from '../../worker.js';
import { defaultLifecycleConfig as config } from '../../workflows/config.js';
import {
  configureSignal,
  dispatchFailedUpdate,
  FLEET_LIVENESS_WORKFLOW_ID,
  fleetLivenessStateQuery,
  pauseRemediationUpdate,
  resumeRemediationUpdate,
  stateQuery,
} from '../../workflows/definitions.js';
import { createTimeSkippingEnv } from '../helpers/env.js';
import { heartbeatPayload } from '../helpers/payloads.js';
import {
  contractPublished,
  dispatchFailed,
  registeredWorkspace,
  useWorkerHarness,
  waitForState,
} from '../helpers/worker.js';

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
  it('no API process served for longer than the TTL: nobody signalled; serving again, each lease counts from then', async () => {
    const served = async (): Promise<void> => {
      harness.fake.apiServedAt = await harness.fake.databaseNow();
    };
    await served();
    const fleet = await fleetOf(2); // fewer than the minimum: only the API's silence can disrupt
    await beat(fleet);
    // The API is down: no mark, no heartbeat, for three TTLs.
    await harness.env.sleep(3 * config.livenessTtlMs);
    const disrupted = await controller().query(fleetLivenessStateQuery);
    expect(disrupted.disruption?.apiSilentForMs).toBeGreaterThan(2 * config.livenessTtlMs);
    expect(disrupted.totals.signalled).toBe(0);
    for (const { id, handle } of fleet) {
      expect((await handle.query(stateQuery)).status).toBe('online');
      expect(leaseExpiries(id)).toBe(0);
    }
    // Serving again; one runtime beats, the other stays silent: it gets a full TTL from then.
    const [silentOne, beatingOne] = fleet;
    if (silentOne === undefined || beatingOne === undefined) throw new Error('no fleet');
    for (let elapsed = 0; elapsed <= config.livenessTtlMs - 30_000; elapsed += 15_000) {
      await served();
      await beat([beatingOne]);
      await harness.env.sleep(15_000);
    }
    const back = await controller().query(fleetLivenessStateQuery);
    expect(back.disruption).toBeNull();
    expect(back.lastDisruption?.apiSilentForMs).not.toBeNull();
    expect((await silentOne.handle.query(stateQuery)).status).toBe('online');
    for (let elapsed = 0; elapsed < 45_000; elapsed += 15_000) {
      await served();
      await beat([beatingOne]);
      await harness.env.sleep(15_000);
    }
    await waitForState(silentOne.handle, (s) => s.status === 'offline');
    expect((await beatingOne.handle.query(stateQuery)).status).toBe('online');
    // These workspaces leave the fleet, so the next test's fleet is its own.
    harness.fake.apiServedAt = null;
    for (const { id } of fleet) harness.fake.ledger.rows.delete(id);
  });

  it('a fleet silent at once is a disruption: nobody declared dead; heartbeats return: no verdict; a lone silent workspace afterwards goes offline a TTL after it ended', async () => {
    const signalledBefore = (await controller().query(fleetLivenessStateQuery)).totals.signalled;
    const fleet = await fleetOf(4);
    await beat(fleet);
    // Every lease expires at once, and stays silent for three TTLs.
    await harness.env.sleep(3 * config.livenessTtlMs);
    const disrupted = await controller().query(fleetLivenessStateQuery);
    expect(disrupted.disruption).toMatchObject({ silent: 4, watched: 4, share: 1 });
    expect(disrupted.totals.signalled).toBe(signalledBefore);
    for (const { id, handle } of fleet) {
      expect((await handle.query(stateQuery)).status).toBe('online');
      expect(leaseExpiries(id)).toBe(0);
    }

    // Heartbeats return, all but one: the disruption ends, with no verdict.
    const [silentOne, ...beating] = fleet;
    if (silentOne === undefined) throw new Error('no fleet');
    await beat(beating);
    await harness.env.sleep(2 * SWEEP_EVERY_MS);
    const ended = await controller().query(fleetLivenessStateQuery);
    expect(ended.disruption).toBeNull();
    expect(ended.lastDisruption).not.toBeNull();
    expect(ended.notBefore).toBe(ended.lastDisruption?.until);
    expect(ended.totals.signalled).toBe(signalledBefore);

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
    expect(after.totals.signalled).toBe(signalledBefore + 1);
    expect(harness.fake.restarts.filter((r) => fleet.some(({ id }) => r.startsWith(`${id}/`)))).toEqual([]);
    for (const { id } of fleet) harness.fake.ledger.rows.delete(id);
  });

  it('paused by an operator: an expired lease waits, shown as held; resumed: it is signalled', async () => {
    const paused = await controller().executeUpdate(pauseRemediationUpdate, {
      args: [{ reason: 'database failover', by: 'ops' }],
    });
    expect(paused).toMatchObject({ outcome: 'paused', paused: { reason: 'database failover', by: 'ops' } });
    const fleet = await fleetOf(4);
    const [silentOne, ...beating] = fleet;
    if (silentOne === undefined) throw new Error('no fleet');
    for (let elapsed = 0; elapsed <= config.livenessTtlMs + 30_000; elapsed += 30_000) {
      await beat(beating);
      await harness.env.sleep(30_000);
    }
    const held = await controller().query(fleetLivenessStateQuery);
    expect(held).toMatchObject({ disruption: null, paused: { by: 'ops' }, lastSweep: { expired: 1, held: 1 } });
    expect((await silentOne.handle.query(stateQuery)).status).toBe('online');

    expect(await controller().executeUpdate(resumeRemediationUpdate, { args: [{ by: 'ops' }] })).toEqual({
      outcome: 'resumed',
      paused: null,
    });
    await beat(beating);
    await harness.env.sleep(2 * SWEEP_EVERY_MS);
    await waitForState(silentOne.handle, (s) => s.status === 'offline');
  });

  it("callers' dead verdicts share the fleet's budget and its pause: over the budget or paused, no verdict; later, dead", async () => {
    harness.fake.askController = true;
    await controller().signal(configureSignal, { remediationPerMinute: 1 });
    await harness.env.sleep(2 * SWEEP_EVERY_MS);
    // Three workspaces whose boxes are gone, each last heard of 20 s ago (not recent), not settling.
    const fleet = [];
    for (let i = 0; i < 3; i++) fleet.push(await registeredWorkspace(harness, 'fd-dead', ['not-running']));
    await harness.env.sleep(20_000);
    const [first, second, third] = fleet;
    if (first === undefined || second === undefined || third === undefined) throw new Error('no fleet');

    expect((await dispatchFailed(harness, first.handle)).verdict).toBe('dead');
    expect(await dispatchFailed(harness, second.handle)).toEqual({
      verdict: 'queued',
      detail: "not running, but no verdict now: the fleet's remediation budget (1 a minute) is spent",
    });
    const refused = await second.handle.query(stateQuery);
    expect(refused.status).toBe('online');
    expect(refused.restart.count).toBe(0);
    expect(harness.fake.revocations).not.toContain(second.id);
    // An operator's own look (the recreate at start) is not held by the budget.
    const look = await registeredWorkspace(harness, 'fd-dead', ['not-running']);
    await harness.env.sleep(20_000);
    const operatorLook = await look.handle.startUpdate(dispatchFailedUpdate, {
      args: [{ caller: 'recreate', operator: true }],
      waitForStage: 'ACCEPTED',
    });
    await harness.env.sleep(3_000);
    expect((await operatorLook.result()).verdict).toBe('dead');

    // An operator pauses: the bucket refills, and still no verdict.
    await controller().executeUpdate(pauseRemediationUpdate, { args: [{ reason: 'dispatcher bug', by: 'ops' }] });
    await harness.env.sleep(60_000);
    harness.fake.probeScript.set(second.id, ['not-running']);
    expect(await dispatchFailed(harness, second.handle)).toEqual({
      verdict: 'queued',
      detail: 'not running, but no verdict now: remediation paused by ops: dispatcher bug',
    });
    await controller().executeUpdate(resumeRemediationUpdate, { args: [{ by: 'ops' }] });
    harness.fake.probeScript.set(second.id, ['not-running']);
    expect((await dispatchFailed(harness, second.handle)).verdict).toBe('dead');
    await waitForState(second.handle, (s) => s.restart.count === 1 && !s.restart.inFlight);
    expect((await controller().query(fleetLivenessStateQuery)).totals).toMatchObject({ granted: 2, refused: 2 });

    // The controller not running: no verdict, and the caller is told why.
    await controller().terminate('test: no controller');
    expect(await dispatchFailed(harness, third.handle)).toEqual({
      verdict: 'queued',
      detail: 'the fleet liveness controller did not answer: no verdict, retry later',
    });
    expect((await third.handle.query(stateQuery)).restart.count).toBe(0);
    harness.fake.askController = false;
  });
});
