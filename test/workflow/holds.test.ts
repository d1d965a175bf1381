/**
 * What holds a restart, on the time-skipping test server with the reference durations: crash-loop
 * backoff (10 s doubling), the drain of a restart that only loads plugins (the next heartbeat
 * wanted, the drain deadline), and an operator's cordon; operator commands as Updates. The box
 * is a mocked activity whose probes follow a script; a pass that removes a plugin no longer
 * declared stands for any pass that changes the box (one restart, cause `reconcile`).
 */
import type { WorkflowHandle } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { defaultLifecycleConfig as config } from '../../workflows/config.js';
import {
  cordonUpdate,
  dispatchFailedUpdate,
  registerSignal,
  restartUpdate,
  stateQuery,
  uncordonUpdate,
  workspaceWorkflowId,
  type DispatchVerdict,
} from '../../workflows/definitions.js';
import { createTimeSkippingEnv } from '../helpers/env.js';
import { heartbeatPayload, registerPayload } from '../helpers/payloads.js';
import { registeredWorkspace, uniqueId, useWorkerHarness, waitForState } from '../helpers/worker.js';

/** Workspaces whose first pass finds a plugin no longer declared: removed, then one restart. */
const withStalePlugin = new Set<string>();

const harness = useWorkerHarness('holds-tests', createTimeSkippingEnv, (fake) => ({
  ...fake.activities,
  listPluginDiff: async (request) => {
    const diff = await fake.activities.listPluginDiff(request);
    if (!withStalePlugin.has(request.workspaceId)) return diff;
    return { ...diff, undeclared: [{ name: 'old', source: 'local://old', revision: 'r1', installedVia: 'delivered' }] };
  },
  // The plugin is gone once removed, not once listed: a listing whose attempt timed out (a held
  // pass on a loaded machine) and was retried still finds it.
  removePlugin: ({ workspaceId }) => {
    withStalePlugin.delete(workspaceId);
    return Promise.resolve('removed');
  },
  deleteTrackingRow: () => Promise.resolve(),
}));

const restartsOf = (id: string): number => harness.fake.restarts.filter((r) => r.startsWith(`${id}/`)).length;

/** The box probes not running and no heartbeat is recent: the evaluation declares it dead. */
async function dies(id: string, handle: WorkflowHandle): Promise<DispatchVerdict> {
  // Past the settle window: one not-running probe is a verdict.
  await harness.env.sleep(config.settleWindowMs + 1_000);
  harness.fake.probeScript.set(id, ['not-running']);
  return handle.executeUpdate(dispatchFailedUpdate, { args: [{ caller: 'test' }] });
}

describe('crash-loop backoff', () => {
  it('a box that dies soon after every restart is restarted at once twice, then after 10 s, then 20 s; an operator restart is not delayed', async () => {
    const { id, handle } = await registeredWorkspace(harness, 'crash');
    for (let restart = 1; restart <= 2; restart++) {
      expect((await dies(id, handle)).verdict).toBe('dead');
      await waitForState(handle, (s) => s.restart.count === restart && !s.restart.inFlight);
    }
    // The second crash in a row: crash-looping, the restart held on a durable timer.
    expect((await dies(id, handle)).verdict).toBe('dead');
    let state = await handle.query(stateQuery);
    expect(state.restart).toMatchObject({ crashes: 2, crashLooping: true, count: 2, inFlight: false });
    expect(state.restart.held).toMatchObject({ cause: 'dead' });
    const heldSince = Date.parse(state.restart.held?.since ?? '');
    expect(Date.parse(state.restart.nextAttemptAt ?? '')).toBe(heldSince + config.crashBackoffBaseMs);
    expect(restartsOf(id)).toBe(2);
    await harness.env.sleep(config.crashBackoffBaseMs);
    state = await waitForState(handle, (s) => s.restart.count === 3 && !s.restart.inFlight);
    expect(Date.parse(state.restart.lastStartedAt ?? '')).toBeGreaterThanOrEqual(heldSince + config.crashBackoffBaseMs);
    expect(state.restart).toMatchObject({ crashLooping: true, nextAttemptAt: null, held: null });
    expect(restartsOf(id)).toBe(3);

    // The third crash waits twice as long; an operator's restart goes at once.
    expect((await dies(id, handle)).verdict).toBe('dead');
    state = await handle.query(stateQuery);
    expect(Date.parse(state.restart.nextAttemptAt ?? '')).toBe(
      Date.parse(state.restart.held?.since ?? '') + 2 * config.crashBackoffBaseMs,
    );
    const answer = await handle.executeUpdate(restartUpdate, { args: [{ reason: 'now', requester: 'operator' }] });
    expect(answer).toEqual({ outcome: 'started', detail: 'restart 4' });
    state = await waitForState(handle, (s) => s.restart.count === 4 && !s.restart.inFlight);
    expect(state.restart).toMatchObject({ held: null, nextAttemptAt: null, lastRequester: 'operator' });
  });
});

describe('restarts wait for work', () => {
  it('a restart that only loads plugins waits while the runtime reports active tasks; the heartbeat reporting none lets it go', async () => {
    harness.fake.hold();
    const { id, handle } = await registeredWithStalePlugin('drain');
    // The runtime reports work in progress before the pass finishes: an online workspace does not
    // want that heartbeat, so only the ledger has it, and the pass reads it there.
    expect(await harness.fake.heartbeat(handle, heartbeatPayload(id, { active_tasks: 2 }))).toBe(false);
    // Not queried while the pass is held: a query waits for the workflow task that runs the held
    // local activity, which only heartbeats every 8 s.
    harness.fake.release();
    let state = await waitForState(handle, (s) => s.restart.held !== null);
    expect(state.restart.held).toMatchObject({ cause: 'reconcile' });
    expect(state.activeTasks).toBe(2);
    expect(state.lastHeartbeat?.activeTasks ?? 0).toBe(0);
    expect(state.status).toBe('online');
    expect(restartsOf(id)).toBe(0);
    // The drain wants every heartbeat: a busy one is forwarded and keeps it held.
    await expect.poll(() => harness.fake.ledger.rows.get(id)?.want).toBe('any');
    expect(await harness.fake.heartbeat(handle, heartbeatPayload(id, { active_tasks: 1 }))).toBe(true);
    state = await waitForState(handle, (s) => s.lastHeartbeat?.activeTasks === 1);
    expect(state.restart.held).not.toBeNull();
    await expect
      .poll(() => harness.fake.ledger.rows.get(id)?.wantVersion)
      .toBe((await handle.query(stateQuery)).livenessContract?.version);
    expect(await harness.fake.heartbeat(handle, heartbeatPayload(id, { active_tasks: 0 }))).toBe(true);
    state = await waitForState(handle, (s) => s.restart.count === 1);
    expect(state.restart).toMatchObject({ held: null, lastRequester: 'reconcile' });
    expect(restartsOf(id)).toBe(1);
  });

  it('the drain deadline lets it go while the runtime stays busy', async () => {
    harness.fake.hold();
    const { id, handle } = await registeredWithStalePlugin('drain-deadline');
    expect(await harness.fake.heartbeat(handle, heartbeatPayload(id, { active_tasks: 3 }))).toBe(false);
    harness.fake.release();
    const held = await waitForState(handle, (s) => s.restart.held !== null);
    await harness.env.sleep(config.drainTimeoutMs - 60_000);
    expect((await handle.query(stateQuery)).restart.count).toBe(0);
    await harness.env.sleep(60_000);
    const state = await waitForState(handle, (s) => s.restart.count === 1);
    expect(Date.parse(state.restart.lastStartedAt ?? '')).toBeGreaterThanOrEqual(
      Date.parse(held.restart.held?.since ?? '') + config.drainTimeoutMs,
    );
  });
});

describe('cordon', () => {
  it('a cordoned workspace whose box dies: verdict shown, no restart until uncordon, then exactly one', async () => {
    const { id, handle } = await registeredWorkspace(harness, 'cordon');
    expect(await handle.executeUpdate(cordonUpdate, { args: [{ reason: 'incident', requester: 'alice' }] })).toEqual({
      outcome: 'started',
      detail: 'cordoned: automatic restarts and plugin deliveries are held until uncordon',
    });
    expect((await dies(id, handle)).verdict).toBe('dead');
    let state = await handle.query(stateQuery);
    expect(state).toMatchObject({ status: 'offline', cordon: { requester: 'alice' } });
    expect(state.deadDetection.lastVerdict).toMatchObject({ verdict: 'dead' });
    // Long past the backoff and the TTL: still held.
    await harness.env.sleep(2 * config.livenessTtlMs);
    expect(restartsOf(id)).toBe(0);
    expect(await handle.executeUpdate(uncordonUpdate, { args: [{ requester: 'alice' }] })).toEqual({
      outcome: 'started',
      detail: 'uncordoned; released: restart (dead: not running and no recent heartbeat)',
    });
    state = await waitForState(handle, (s) => s.restart.count === 1 && !s.restart.inFlight);
    expect(state.cordon).toBeNull();
    expect(restartsOf(id)).toBe(1);
  });
});

/**
 * A workspace started and registered whose first pass (held by the caller: fake.hold()) removes a
 * plugin no longer declared: online, that pass running.
 */
async function registeredWithStalePlugin(prefix: string): Promise<{ id: string; handle: WorkflowHandle }> {
  const id = uniqueId(prefix);
  withStalePlugin.add(id);
  const handle = await harness.env.client.workflow.start('workspaceWorkflow', {
    taskQueue: harness.taskQueue,
    workflowId: workspaceWorkflowId(id),
    args: [{ workspaceId: id }],
  });
  await handle.signal(registerSignal, registerPayload(id));
  await waitForState(handle, (s) => s.status === 'online' && s.reconcile.running);
  return { id, handle };
}
