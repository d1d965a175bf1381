/**
 * Restarts, the settle window and two-strike dead detection, with the reference durations
 * (30 s settle, 15 s recent heartbeat, 2 s fresh wait, 500 ms re-probe, 2 strikes in 30 s,
 * 180 s liveness, 12 min provisioning) on the time-skipping test server: the windows pass in
 * milliseconds of wall time. The box is a mocked activity whose probes follow a script; the
 * heartbeat ledger a model on the test server's clock; an expired lease is signalled as the fleet
 * liveness controller signals it (its sweep: test/workflow/fleet-liveness.test.ts).
 */
import type { WorkflowHandle } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { defaultLifecycleConfig as config } from '../../workflows/config.js';
import {
  dispatchFailedUpdate,
  heartbeatSignal,
  registerSignal,
  restartSignal,
  stateQuery,
  workspaceWorkflowId,
} from '../../workflows/definitions.js';
import type { WorkspaceState } from '../../workflows/state-machine.js';
import { createTimeSkippingEnv } from '../helpers/env.js';
import { heartbeatPayload, registerPayload } from '../helpers/payloads.js';
import {
  contractPublished,
  dispatchFailed,
  expireLease,
  registeredWorkspace,
  uniqueId,
  useWorkerHarness,
  waitForState,
} from '../helpers/worker.js';

const harness = useWorkerHarness('dead-detection-tests', createTimeSkippingEnv);

type Probe = 'running' | 'not-running' | 'error';

/** An online workspace (registered, no heartbeat yet) whose box probes answer `probes` in order. */
const onlineWorkspace = (probes: Probe[] = []): Promise<{ id: string; handle: WorkflowHandle }> =>
  registeredWorkspace(harness, 'dd', probes);

/** Operator restart, completed (the box restarted), so the settle window is open. */
async function restartAndSettle(handle: WorkflowHandle, expectedCount: number): Promise<WorkspaceState> {
  await handle.signal(restartSignal, { reason: 'config changed', requester: 'operator' });
  return waitForState(handle, (s) => s.restart.count === expectedCount && !s.restart.inFlight);
}

/** The workspace's restarts in order, by their per-workspace number (ids end in a random suffix). */
const restartsOf = (id: string): string[] =>
  harness.fake.restarts.filter((r) => r.startsWith(`${id}/`)).map((r) => r.replace(/-[0-9a-f]{8}$/, ''));
const probesOf = (id: string): number => harness.fake.probes.filter((p) => p === id).length;
const grantsOf = (id: string): number => harness.fake.grantRequests.filter((w) => w === id).length;

describe('settle window', () => {
  it('settle window with a recent heartbeat and a not-running box: queued, URL kept, no restart', async () => {
    const { id, handle } = await onlineWorkspace();
    await restartAndSettle(handle, 1);
    // The runtime comes back inside the settle window, then a lone not-running probe arrives.
    await handle.signal(registerSignal, registerPayload(id));
    await handle.signal(heartbeatSignal, heartbeatPayload(id));
    await waitForState(handle, (s) => s.status === 'online' && s.counters.heartbeats === 1);
    harness.fake.probeScript.set(id, ['not-running', 'not-running']);

    const verdict = await dispatchFailed(harness, handle);
    expect(verdict.verdict).toBe('queued');
    const state = await waitForState(handle, (s) => s.deadDetection.lastVerdict !== null);
    const { lastStartedAt, settleUntil } = state.restart;
    expect(Date.parse(settleUntil ?? '') - Date.parse(lastStartedAt ?? '')).toBe(config.settleWindowMs);
    expect(state.url).toBe(`http://box-${id}.internal:8000`);
    expect(state.status).toBe('online');
    expect(state.restart.count).toBe(1);
    expect(restartsOf(id)).toEqual([`${id}/restart-1`]);
    expect(probesOf(id)).toBe(2); // probe and re-probe
    expect(harness.fake.revocations).not.toContain(id);
  });

  it('settle window, no heartbeat: strike 1 is not dead; a second within 30 s is dead', async () => {
    const { id, handle } = await onlineWorkspace();
    await restartAndSettle(handle, 1);
    harness.fake.probeScript.set(id, ['not-running', 'not-running', 'not-running', 'not-running']);

    const first = await dispatchFailed(harness, handle);
    expect(first).toEqual({
      verdict: 'queued',
      detail: 'settling after a restart: strike 1/2, retry later',
      strikes: 1,
    });
    let state = await waitForState(handle, (s) => s.deadDetection.strikes?.count === 1);
    expect(state.restart.count).toBe(1);
    // A strike that declares nothing takes nothing of the fleet's remediation budget.
    expect(grantsOf(id)).toBe(0);

    const second = await dispatchFailed(harness, handle);
    expect(second.verdict).toBe('dead');
    expect(grantsOf(id)).toBe(1);
    state = await waitForState(handle, (s) => s.restart.count === 2 && !s.restart.inFlight);
    expect(state.deadDetection.strikes).toBeNull();
    expect(state.restart).toMatchObject({ lastRequester: 'test' });
    expect(state.restart.lastReason).toMatch(/^dead: 2 not-running probes within 30s while settling/);
    expect(restartsOf(id)).toEqual([`${id}/restart-1`, `${id}/restart-2`]);
    expect(harness.fake.revocations.filter((w) => w === id)).toHaveLength(1);
  });

  it('settle window, no heartbeat: a second strike more than 30 s after the first starts a new count, not dead', async () => {
    const { id, handle } = await onlineWorkspace();
    await restartAndSettle(handle, 1);
    harness.fake.probeScript.set(id, ['not-running', 'not-running', 'not-running', 'not-running']);
    expect((await dispatchFailed(harness, handle)).verdict).toBe('queued');
    const firstStrike = (await waitForState(handle, (s) => s.deadDetection.strikes?.count === 1)).deadDetection.strikes;

    // 28 s later a second restart opens a new settle window; the next failure lands 31 s after the first strike.
    await harness.env.sleep(28_000);
    await restartAndSettle(handle, 2);
    await harness.env.sleep(31_000 - 28_000 - config.freshHeartbeatWaitMs - config.reprobeDelayMs);
    const verdict = await dispatchFailed(harness, handle);
    expect(verdict).toEqual({
      verdict: 'queued',
      detail: 'settling after a restart: strike 1/2, retry later',
      strikes: 1,
    });
    const state = await waitForState(handle, (s) => s.deadDetection.strikes?.firstAt !== firstStrike?.firstAt);
    expect(state.deadDetection.strikes?.count).toBe(1);
    expect(state.restart.count).toBe(2);
    expect(harness.fake.revocations).not.toContain(id);
  });
});

describe('dead detection', () => {
  it('no recent heartbeat, not settling, not running: dead after one probe; offline, URL cleared, tokens revoked, one restart', async () => {
    const { id, handle } = await onlineWorkspace(['not-running']);
    const verdict = await dispatchFailed(harness, handle);
    expect(verdict).toEqual({ verdict: 'dead', detail: 'not running and no recent heartbeat: restart triggered' });
    const state = await waitForState(handle, (s) => s.restart.count === 1 && !s.restart.inFlight);
    expect(probesOf(id)).toBe(1);
    expect(grantsOf(id)).toBe(1);
    expect(state.url).toBeNull();
    expect(state.recentTransitions.slice(0, 2).map((t) => `${t.from}→${t.to}`)).toEqual([
      'offline→provisioning',
      'online→offline',
    ]);
    expect(state.recentTransitions[1]?.cause).toBe('dead: not running and no recent heartbeat');
    expect(harness.fake.revocations.filter((w) => w === id)).toHaveLength(1);
    expect(restartsOf(id)).toEqual([`${id}/restart-1`]);
    expect(state.deadDetection.deadDeclarations).toBe(1);
  });

  it("the verdict's revocation finishes before its restart starts, and revokes only tokens minted before the verdict", async () => {
    const { id, handle } = await onlineWorkspace(['not-running']);
    harness.fake.holdRevocations();
    try {
      expect((await dispatchFailed(harness, handle)).verdict).toBe('dead');
      await expect.poll(() => harness.fake.revocationRequests.filter((r) => r.workspaceId === id)).toHaveLength(1);
      // The restarted runtime would mint a new token: no restart while the old ones are being revoked.
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(restartsOf(id)).toEqual([]);
    } finally {
      harness.fake.releaseRevocations();
    }
    await waitForState(handle, (s) => s.restart.count === 1 && !s.restart.inFlight);
    expect(restartsOf(id)).toEqual([`${id}/restart-1`]);
    const request = harness.fake.revocationRequests.find((r) => r.workspaceId === id);
    const verdictAt = (await handle.query(stateQuery)).deadDetection.lastVerdict?.at;
    expect(request?.mintedBefore).toBeDefined();
    expect(Date.parse(request?.mintedBefore ?? '')).toBeLessThanOrEqual(Date.parse(verdictAt ?? ''));
  });

  it('recent heartbeat, not running then running on re-probe: alive, strikes reset (a flapping box never restarts)', async () => {
    const { id, handle } = await onlineWorkspace();
    await restartAndSettle(handle, 1);
    harness.fake.probeScript.set(id, ['not-running', 'not-running']);
    expect((await dispatchFailed(harness, handle)).verdict).toBe('queued'); // strike 1
    await waitForState(handle, (s) => s.deadDetection.strikes?.count === 1);

    await handle.signal(heartbeatSignal, heartbeatPayload(id));
    for (let flap = 0; flap < 3; flap++) {
      harness.fake.probeScript.set(id, ['not-running', 'running']);
      expect(await dispatchFailed(harness, handle)).toEqual({ verdict: 'alive', detail: 'the box is running' });
    }
    const state = await waitForState(handle, (s) => s.deadDetection.lastProbe?.result === 'running');
    expect(state.deadDetection.strikes).toBeNull();
    expect(state.restart.count).toBe(1);
    expect(restartsOf(id)).toHaveLength(1);
  });

  it('probe transport error: alive, nothing written', async () => {
    const { id, handle } = await onlineWorkspace(['error']);
    const before = await waitForState(handle, () => true);
    expect(await dispatchFailed(harness, handle)).toEqual({
      verdict: 'alive',
      detail: 'the probe failed: assumed alive',
    });
    const after = await waitForState(handle, (s) => s.deadDetection.lastProbe?.result === 'error');
    expect(after.status).toBe('online');
    expect(after.url).toBe(before.url);
    expect(after.recentTransitions).toEqual(before.recentTransitions);
    expect(after.restart.count).toBe(0);
    expect(harness.fake.revocations).not.toContain(id);
    expect(harness.fake.projections.filter((p) => p.workspaceId === id)).toHaveLength(1); // only the boot's online
  });

  it('restart in flight: restarting, zero probes', async () => {
    const { id, handle } = await onlineWorkspace();
    harness.fake.holdRestarts();
    await handle.signal(restartSignal, {});
    await waitForState(handle, (s) => s.restart.inFlight);
    const verdict = await handle.executeUpdate(dispatchFailedUpdate, { args: [{ caller: 'test' }] });
    harness.fake.releaseRestarts();
    expect(verdict).toEqual({ verdict: 'restarting', detail: 'a restart is in flight' });
    expect(probesOf(id)).toBe(0);
    const state = await waitForState(handle, (s) => !s.restart.inFlight);
    expect(state.restart).toMatchObject({ count: 1, lastRequester: 'operator', lastReason: 'operator request' });
  });

  it('50 dispatchFailed in one burst: exactly one restart', async () => {
    const { id, handle } = await onlineWorkspace(['not-running']); // then running: the restarted box is up
    const updates = await Promise.all(
      Array.from({ length: 50 }, () =>
        handle.startUpdate(dispatchFailedUpdate, { args: [{ caller: 'burst' }], waitForStage: 'ACCEPTED' }),
      ),
    );
    await harness.env.sleep(60_000);
    const verdicts = await Promise.all(updates.map((u) => u.result()));
    expect(verdicts.filter((v) => v.verdict === 'dead')).toHaveLength(1);
    expect(verdicts.every((v) => ['dead', 'restarting', 'alive', 'queued'].includes(v.verdict))).toBe(true);
    const state = await waitForState(handle, (s) => !s.restart.inFlight);
    expect(state.restart.count).toBe(1);
    expect(restartsOf(id)).toEqual([`${id}/restart-1`]);
    expect(harness.fake.revocations.filter((w) => w === id)).toHaveLength(1);
  });

  it('dead declared soon after a previous restart: the restart still happens (no silent drop)', async () => {
    const { id, handle } = await onlineWorkspace();
    await restartAndSettle(handle, 1);
    // 31 s after the first restart: past the settle window, well inside the reference's 60 s debounce.
    await harness.env.sleep(31_000);
    harness.fake.probeScript.set(id, ['not-running']);
    expect((await dispatchFailed(harness, handle)).verdict).toBe('dead');
    const state = await waitForState(handle, (s) => s.restart.count === 2 && !s.restart.inFlight);
    expect(restartsOf(id)).toEqual([`${id}/restart-1`, `${id}/restart-2`]);
    expect(state.restart.lastRequester).toBe('test');
  });
});

describe('watchdogs', () => {
  it('heartbeat silence beyond the TTL: offline and evaluated; a later heartbeat brings it online with one reconcile', async () => {
    const { id, handle } = await onlineWorkspace(['running']);
    await handle.signal(heartbeatSignal, heartbeatPayload(id));
    await harness.env.sleep(config.livenessTtlMs + 1_000);
    await expireLease(handle);
    const offline = await waitForState(handle, (s) => s.status === 'offline' && s.deadDetection.lastVerdict !== null);
    expect(offline.deadDetection.lastVerdict).toMatchObject({ verdict: 'alive', requester: 'watchdog' });
    expect(probesOf(id)).toBe(1);
    const reconcilesBefore = offline.counters.reconcilesStarted;

    await handle.signal(heartbeatSignal, heartbeatPayload(id));
    const back = await waitForState(handle, (s) => s.status === 'online' && !s.reconcile.running);
    expect(back.counters.reconcilesStarted).toBe(reconcilesBefore + 1);
  });

  it('a hung runtime (silent, its box probes running) is not parked offline: a TTL later the box is restarted', async () => {
    const { id, handle } = await onlineWorkspace(['running']);
    await harness.env.sleep(config.livenessTtlMs + 1_000);
    await expireLease(handle);
    const offline = await waitForState(handle, (s) => s.status === 'offline' && s.deadDetection.lastVerdict !== null);
    expect(offline.deadDetection.lastVerdict).toMatchObject({ verdict: 'alive', requester: 'watchdog' });
    expect(restartsOf(id)).toEqual([]);
    await harness.env.sleep(config.livenessTtlMs + 1_000);
    await expireLease(handle);
    const restarted = await waitForState(handle, (s) => s.restart.count === 1 && !s.restart.inFlight);
    expect(restarted.restart).toMatchObject({
      lastRequester: 'watchdog',
      lastReason: 'offline and silent for 180s more',
    });
    expect(restartsOf(id)).toEqual([`${id}/restart-1`]);
  });

  it('heartbeat silence on a box that is not running: the watchdog declares it dead and restarts it', async () => {
    const { id, handle } = await onlineWorkspace(['not-running']);
    await harness.env.sleep(config.livenessTtlMs + 1_000);
    await expireLease(handle);
    const state = await waitForState(handle, (s) => s.restart.count === 1 && !s.restart.inFlight);
    expect(state.deadDetection.lastVerdict).toMatchObject({ verdict: 'dead', requester: 'watchdog' });
    expect(state.restart.lastRequester).toBe('watchdog');
    expect(harness.fake.revocations.filter((w) => w === id)).toHaveLength(1);
    // The controller counted the lease's expiry against the fleet's budget: the verdict asks nothing more.
    expect(grantsOf(id)).toBe(0);
  });

  it("an expiry the workflow's own clock does not confirm is answered with the lease published again", async () => {
    const { id, handle } = await onlineWorkspace(['not-running']);
    const { livenessContract } = await handle.query(stateQuery);
    await harness.env.sleep(60_000);
    await expireLease(handle); // the ledger says silent; the workflow saw its register 60 s ago
    const renewed = await waitForState(
      handle,
      (s) => (s.livenessContract?.version ?? 0) > (livenessContract?.version ?? 0),
    );
    expect(renewed.status).toBe('online');
    expect(probesOf(id)).toBe(0);
    // The lease runs from the register the workflow saw, 60 s before: it expires 120 s from now.
    const leaseSince = harness.fake.ledger.rows.get(id)?.leaseSince ?? 0;
    const silentFor = (await harness.fake.databaseNow()) - leaseSince;
    expect(silentFor).toBeGreaterThanOrEqual(60_000);
    expect(silentFor).toBeLessThan(70_000);
  });

  it('a heartbeat only in the ledger within 15 s counts as recent at verdict time: queued, not dead', async () => {
    const { id, handle } = await onlineWorkspace(['not-running', 'not-running']);
    await handle.signal(heartbeatSignal, heartbeatPayload(id));
    await harness.env.sleep(55_000);
    await harness.fake.recordedOnly(id); // 5 s before the failure, by the database's age
    await harness.env.sleep(5_000);
    const verdict = await dispatchFailed(harness, handle);
    expect(verdict.verdict).toBe('queued');
    expect(probesOf(id)).toBe(2);
    expect((await handle.query(stateQuery)).restart.count).toBe(0);
  });

  it('an external runtime silent past the TTL awaits its agent again: no probe, no restart, no revocation, ever', async () => {
    const id = uniqueId('dd-ext');
    harness.fake.probeScript.set(id, ['not-running', 'not-running']);
    const handle = await harness.env.client.workflow.start('workspaceWorkflow', {
      taskQueue: harness.taskQueue,
      workflowId: workspaceWorkflowId(id),
      args: [{ workspaceId: id, initialStatus: 'awaiting_agent' }],
    });
    await handle.signal(registerSignal, registerPayload(id));
    await waitForState(handle, (s) => s.status === 'online');
    await harness.env.sleep(config.livenessTtlMs + 1_000);
    await expireLease(handle);
    const silent = await waitForState(handle, (s) => s.status === 'awaiting_agent');
    expect(silent.recentTransitions[0]).toMatchObject({
      from: 'online',
      to: 'awaiting_agent',
      cause: 'no heartbeat for 180s',
    });
    // Long after: still waiting, never offline, never probed, restarted or revoked; its lease unwatched.
    expect(silent.livenessContract).toMatchObject({ leaseWatched: false, want: 'any' });
    await harness.env.sleep(3 * config.livenessTtlMs);
    const later = await handle.query(stateQuery);
    expect(later.status).toBe('awaiting_agent');
    expect(later.deadDetection.lastVerdict).toBeNull();
    expect(probesOf(id)).toBe(0);
    expect(restartsOf(id)).toEqual([]);
    expect(harness.fake.revocations.filter((w) => w === id)).toEqual([]);
    expect(later.counters.reconcilesStarted).toBe(0);
    await handle.signal(heartbeatSignal, heartbeatPayload(id));
    await waitForState(handle, (s) => s.status === 'online');
  });

  it('provisioning timeout: failed; a late heartbeat brings it online with one reconcile', async () => {
    const id = uniqueId('dd-timeout');
    const handle = await harness.env.client.workflow.start('workspaceWorkflow', {
      taskQueue: harness.taskQueue,
      workflowId: workspaceWorkflowId(id),
      args: [{ workspaceId: id }],
    });
    await harness.env.sleep(config.provisioningTimeoutMs + 1_000);
    const failed = await waitForState(handle, (s) => s.status === 'failed');
    expect(failed.recentTransitions[0]?.cause).toBe('still provisioning after 720s');
    expect(failed.counters.reconcilesStarted).toBe(0);

    await handle.signal(heartbeatSignal, heartbeatPayload(id));
    const online = await waitForState(handle, (s) => s.status === 'online' && !s.reconcile.running);
    expect(online.counters.reconcilesStarted).toBe(1);
    expect(harness.fake.reconcileCalls.filter((c) => c.workspaceId === id).map((c) => c.trigger)).toEqual([
      'failed→online (heartbeat)',
    ]);
  });
});

describe('issue 29: verdicts as when every heartbeat is forwarded', () => {
  it("case 1: the new runtime's first heartbeat, landing in the wait for a fresh one, is forwarded: queued, one restart", async () => {
    const { id, handle } = await onlineWorkspace();
    await restartAndSettle(handle, 1);
    harness.fake.probeScript.set(id, ['not-running', 'not-running', 'not-running', 'not-running']);
    // A first dispatch failure in the settle window: strike 1, nothing checked in yet.
    expect(await dispatchFailed(harness, handle)).toEqual({
      verdict: 'queued',
      detail: 'settling after a restart: strike 1/2, retry later',
      strikes: 1,
    });
    // The new runtime registers; the workflow wants its next heartbeat, whatever it says.
    await handle.signal(registerSignal, registerPayload(id));
    await waitForState(handle, (s) => s.counters.registers === 2);
    expect((await contractPublished(harness, id, handle)).livenessContract?.want).toBe('any');
    // A second failure waits for a fresh heartbeat; the runtime's first one lands in that wait.
    const update = await handle.startUpdate(dispatchFailedUpdate, {
      args: [{ caller: 'test', error: 'connection refused' }],
      waitForStage: 'ACCEPTED',
    });
    expect(await harness.fake.heartbeat(handle, heartbeatPayload(id))).toBe(true);
    await harness.env.sleep(config.freshHeartbeatWaitMs + config.reprobeDelayMs + 100);
    expect((await update.result()).verdict).toBe('queued');
    const state = await handle.query(stateQuery);
    expect(state.restart.count).toBe(1);
    expect(state.counters.heartbeats).toBe(1);
    expect(restartsOf(id)).toEqual([`${id}/restart-1`]);
    expect(harness.fake.revocations).not.toContain(id);
  });

  it('case 1, recorded only: a heartbeat the ledger has from after the restart counts as fresh when the wait ends', async () => {
    const { id, handle } = await onlineWorkspace();
    await restartAndSettle(handle, 1);
    harness.fake.probeScript.set(id, ['not-running', 'not-running', 'not-running', 'not-running']);
    expect((await dispatchFailed(harness, handle)).verdict).toBe('queued');
    await handle.signal(registerSignal, registerPayload(id));
    await waitForState(handle, (s) => s.counters.registers === 2);
    await contractPublished(harness, id, handle);
    const update = await handle.startUpdate(dispatchFailedUpdate, {
      args: [{ caller: 'test', error: 'connection refused' }],
      waitForStage: 'ACCEPTED',
    });
    await harness.fake.recordedOnly(id); // an API that decided it under an older contract
    await harness.env.sleep(config.freshHeartbeatWaitMs + config.reprobeDelayMs + 100);
    expect((await update.result()).verdict).toBe('queued');
    expect((await handle.query(stateQuery)).restart.count).toBe(1);
    expect(harness.fake.revocations).not.toContain(id);
  });

  for (const offsetMs of [-6_000, 60_000]) {
    it(`case 5: a database clock ${offsetMs / 1000} s off gives the same ages: a heartbeat 10 s old is recent, queued`, async () => {
      harness.fake.databaseClockOffsetMs = offsetMs;
      try {
        const { id, handle } = await onlineWorkspace(['not-running', 'not-running']);
        await contractPublished(harness, id, handle);
        await harness.env.sleep(60_000); // the register is not recent any more
        expect(await harness.fake.heartbeat(handle, heartbeatPayload(id))).toBe(false); // recorded only
        await harness.env.sleep(10_000);
        const verdict = await dispatchFailed(harness, handle);
        expect(verdict.verdict).toBe('queued');
        expect(probesOf(id)).toBe(2);
        expect((await handle.query(stateQuery)).restart.count).toBe(0);
      } finally {
        harness.fake.databaseClockOffsetMs = 0;
      }
    });
  }
});
