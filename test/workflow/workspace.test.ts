/**
 * The workspace workflow end to end: the real Java time-skipping test server, a real worker
 * running the bundled workflow, mocked activities that count reconcile passes.
 */
import type { WorkflowHandle } from '@temporalio/client';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { relayRuntimeSignal, type RelayOptions } from '../../api/relay.js';
import { defaultLifecycleConfig } from '../../workflows/config.js';
import {
  deprovisionSignal,
  heartbeatSignal,
  registerSignal,
  restartSignal,
  stateQuery,
  workspaceStartInput,
  workspaceWorkflowId,
  type WorkspaceWorkflowInput,
} from '../../workflows/definitions.js';
import { workflowMetadataQuery } from '@temporalio/workflow';
import { pluginsPendingKey, workspaceStatusKey } from '../../workflows/operator-view.js';
import type { WorkspaceState } from '../../workflows/state-machine.js';
import { createTimeSkippingEnv } from '../helpers/env.js';
import { heartbeatPayload, registerPayload } from '../helpers/payloads.js';
import { createWorker, expireLease, uniqueId, useWorkerHarness, waitForState } from '../helpers/worker.js';

const harness = useWorkerHarness('workspace-tests', createTimeSkippingEnv);
/** A runtime call's relay to a managed workspace's workflow, on this file's task queue. */
const relayTo = (id: string): RelayOptions => ({
  taskQueue: harness.taskQueue,
  start: () => Promise.resolve(workspaceStartInput(id, false)),
});

async function start(workspaceId: string, input: Partial<WorkspaceWorkflowInput> = {}): Promise<WorkflowHandle> {
  return harness.env.client.workflow.start('workspaceWorkflow', {
    taskQueue: harness.taskQueue,
    workflowId: workspaceWorkflowId(workspaceId),
    args: [{ workspaceId, ...input }],
  });
}

function reconcilesFor(workspaceId: string): number {
  return harness.fake.reconcileCalls.filter((call) => call.workspaceId === workspaceId).length;
}

const idle = (state: WorkspaceState): boolean => !state.reconcile.running;

describe('boot', () => {
  it('heartbeat-only boot: provisioning → online by heartbeat, reconcile once', async () => {
    const id = uniqueId('hb-only');
    const handle = await start(id);
    expect((await handle.query(stateQuery)).status).toBe('provisioning');

    await handle.signal(heartbeatSignal, heartbeatPayload(id));
    const state = await waitForState(
      handle,
      (s) => s.status === 'online' && s.counters.reconcilesStarted === 1 && idle(s),
    );
    expect(state.recentTransitions[0]).toMatchObject({ from: 'provisioning', to: 'online', cause: 'heartbeat' });

    for (let i = 0; i < 3; i++) await handle.signal(heartbeatSignal, heartbeatPayload(id));
    const after = await waitForState(handle, (s) => s.counters.heartbeats === 4);
    expect(after.counters.reconcilesStarted).toBe(1);
    expect(reconcilesFor(id)).toBe(1);
    expect(harness.fake.reconcileCalls.find((c) => c.workspaceId === id)?.trigger).toBe(
      'provisioning→online (heartbeat)',
    );
  });

  it('register before heartbeat: online by register, later heartbeats do not reconcile again', async () => {
    const id = uniqueId('reg-first');
    const handle = await start(id);
    await handle.signal(registerSignal, registerPayload(id));
    const online = await waitForState(
      handle,
      (s) => s.status === 'online' && idle(s) && s.counters.reconcilesStarted === 1,
    );
    expect(online.url).toBe(`http://box-${id}.internal:8000`);
    expect(online.agentCard).toMatchObject({ name: `agent ${id}`, skills: 1 });

    for (let i = 0; i < 5; i++) await handle.signal(heartbeatSignal, heartbeatPayload(id));
    const after = await waitForState(handle, (s) => s.counters.heartbeats === 5);
    expect(after.status).toBe('online');
    expect(after.counters.reconcilesStarted).toBe(1);
    expect(reconcilesFor(id)).toBe(1);
  });

  it('register and heartbeat delivered in the same workflow task reconcile once', async () => {
    // Signals sent before any worker polls this queue all land in the run's first workflow task.
    const queue = uniqueId('same-task');
    const id = uniqueId('same-task');
    const handle = await harness.env.client.workflow.start('workspaceWorkflow', {
      taskQueue: queue,
      workflowId: workspaceWorkflowId(id),
      args: [{ workspaceId: id }],
    });
    await handle.signal(registerSignal, registerPayload(id));
    await handle.signal(heartbeatSignal, heartbeatPayload(id));
    await handle.signal(heartbeatSignal, heartbeatPayload(id));

    const lateWorker = await createWorker(harness.env, queue, harness.fake.activities);
    await lateWorker.runUntil(async () => {
      const state = await waitForState(
        handle,
        (s) => s.counters.heartbeats === 2 && idle(s) && s.counters.reconcilesStarted > 0,
      );
      expect(state.status).toBe('online');
      expect(state.counters.reconcilesStarted).toBe(1);
    });
    expect(reconcilesFor(id)).toBe(1);

    const { events } = await handle.fetchHistory();
    const firstTaskStarted = events?.findIndex((e) => e.workflowTaskStartedEventAttributes) ?? -1;
    const signaled = events?.flatMap((e, i) => (e.workflowExecutionSignaledEventAttributes ? [i] : [])) ?? [];
    expect(signaled).toHaveLength(3);
    expect(signaled.every((i) => i < firstTaskStarted)).toBe(true);
  });

  it('duplicated registers reconcile once', async () => {
    const id = uniqueId('dup-reg');
    const handle = await start(id);
    await Promise.all(Array.from({ length: 5 }, () => handle.signal(registerSignal, registerPayload(id))));
    const state = await waitForState(handle, (s) => s.counters.registers === 5 && idle(s));
    expect(state.status).toBe('online');
    expect(state.counters.reconcilesStarted).toBe(1);
    expect(reconcilesFor(id)).toBe(1);
  });

  it('a heartbeat that starts the workflow (signal-with-start) brings it online and reconciles once', async () => {
    const id = uniqueId('hb-starts');
    await relayRuntimeSignal(harness.env.client, id, 'heartbeat', heartbeatPayload(id), relayTo(id));
    const handle = harness.env.client.workflow.getHandle(workspaceWorkflowId(id));
    const state = await waitForState(
      handle,
      (s) => s.status === 'online' && idle(s) && s.counters.reconcilesStarted === 1,
    );
    expect(state.recentTransitions.at(-1)).toMatchObject({ from: 'provisioning', to: 'online' });
    await relayRuntimeSignal(harness.env.client, id, 'register', registerPayload(id), relayTo(id));
    const after = await waitForState(handle, (s) => s.counters.registers === 1);
    expect(after.counters.reconcilesStarted).toBe(1);
    expect(reconcilesFor(id)).toBe(1);
  });
});

describe('recovery and coalescing', () => {
  it('offline → online recovery reconciles once', async () => {
    const id = uniqueId('recovery');
    const handle = await start(id);
    await handle.signal(registerSignal, registerPayload(id));
    await waitForState(handle, (s) => s.status === 'online' && idle(s));

    // Silence past the 180 s liveness TTL, skipped by the test server, not slept; the fleet
    // liveness controller finds the lease expired.
    await harness.env.sleep(defaultLifecycleConfig.livenessTtlMs + 1_000);
    await expireLease(handle);
    const offline = await waitForState(handle, (s) => s.status === 'offline');
    expect(offline.recentTransitions[0]?.cause).toBe('no heartbeat for 180s');

    await handle.signal(heartbeatSignal, heartbeatPayload(id));
    await handle.signal(heartbeatSignal, heartbeatPayload(id));
    const back = await waitForState(handle, (s) => s.counters.heartbeats === 2 && idle(s));
    expect(back.status).toBe('online');
    expect(back.counters.reconcilesStarted).toBe(2);
    expect(harness.fake.reconcileCalls.filter((c) => c.workspaceId === id).map((c) => c.trigger)).toEqual([
      'provisioning→online (register)',
      'offline→online (heartbeat)',
    ]);
  });

  it('a trigger during a running reconcile coalesces into exactly one follow-up', async () => {
    const id = uniqueId('coalesce');
    const handle = await start(id);
    harness.fake.hold();
    await handle.signal(registerSignal, registerPayload(id));
    await waitForState(handle, (s) => s.reconcile.running);
    await expect.poll(() => reconcilesFor(id)).toBe(1);

    // Two degraded → online recoveries while the first pass is held open.
    for (let i = 0; i < 2; i++) {
      await handle.signal(heartbeatSignal, heartbeatPayload(id, { error_rate: 0.9 }));
      await handle.signal(heartbeatSignal, heartbeatPayload(id, { error_rate: 0 }));
    }
    const queued = await waitForState(handle, (s) => s.counters.heartbeats === 4);
    expect(queued.reconcile).toMatchObject({ running: true, followUp: true });
    expect(queued.counters).toMatchObject({ reconcilesRequested: 3, reconcilesStarted: 1, reconcilesCoalesced: 2 });

    harness.fake.release();
    const done = await waitForState(handle, (s) => s.counters.reconcilesStarted === 2 && idle(s));
    expect(done.reconcile.followUp).toBe(false);
    expect(reconcilesFor(id)).toBe(2);
  });
});

describe('degraded', () => {
  it('degrades at error_rate ≥ 0.5 or wedged and recovers only below 0.1 with a clear runtime state', async () => {
    const id = uniqueId('degraded');
    const handle = await start(id);
    await handle.signal(registerSignal, registerPayload(id));
    await handle.signal(heartbeatSignal, heartbeatPayload(id, { error_rate: 0.5 }));
    await waitForState(handle, (s) => s.status === 'degraded');
    await handle.signal(heartbeatSignal, heartbeatPayload(id, { error_rate: 0.2 }));
    expect((await waitForState(handle, (s) => s.counters.heartbeats === 2)).status).toBe('degraded');
    await handle.signal(heartbeatSignal, heartbeatPayload(id, { error_rate: 0.05, runtime_state: 'wedged' }));
    expect((await waitForState(handle, (s) => s.counters.heartbeats === 3)).status).toBe('degraded');
    await handle.signal(heartbeatSignal, heartbeatPayload(id, { error_rate: 0.05 }));
    const recovered = await waitForState(handle, (s) => s.counters.heartbeats === 4 && idle(s));
    expect(recovered.status).toBe('online');
    expect(recovered.counters.reconcilesStarted).toBe(2);
  });

  it('thresholds are configuration', async () => {
    const id = uniqueId('thresholds');
    const handle = await start(id, { config: { degradeErrorRate: 0.9 } });
    await handle.signal(registerSignal, registerPayload(id));
    await handle.signal(heartbeatSignal, heartbeatPayload(id, { error_rate: 0.6 }));
    expect((await waitForState(handle, (s) => s.counters.heartbeats === 1)).status).toBe('online');
  });
});

describe('invalid payloads and removal', () => {
  it('an invalid payload is rejected with a reason and never crashes the workflow', async () => {
    const id = uniqueId('invalid');
    const handle = await start(id);
    await handle.signal(heartbeatSignal, { workspace_id: id, error_rate: 'high' });
    await handle.signal(registerSignal, { id, url: 'ftp://box', agent_card: {} });
    await handle.signal(registerSignal, registerPayload('someone-else'));
    await handle.signal(heartbeatSignal, 'not an object');
    const state = await waitForState(handle, (s) => s.counters.rejected === 4);
    expect(state.status).toBe('provisioning');
    expect(state.recentRejections.map((r) => r.reason)).toEqual([
      expect.stringContaining('(body)'),
      expect.stringContaining('does not match workspace'),
      expect.stringContaining('url: must be an http(s) URL'),
      expect.stringContaining('error_rate'),
    ]);
    await handle.signal(heartbeatSignal, heartbeatPayload(id));
    expect((await waitForState(handle, (s) => s.status === 'online')).counters.rejected).toBe(4);
  });

  it('deprovision completes the workflow and a later register never resurrects it', async () => {
    const id = uniqueId('removed');
    const handle = await start(id);
    await handle.signal(registerSignal, registerPayload(id));
    await waitForState(handle, (s) => s.status === 'online' && idle(s));
    await handle.signal(deprovisionSignal);
    const final = (await handle.result()) as WorkspaceState;
    expect(final.status).toBe('removed');
    // Removed means gone: its box's runtime stopped and its tokens revoked, before the run closed.
    expect(harness.fake.stops).toEqual(expect.arrayContaining([id]));
    expect(harness.fake.revocations).toEqual(expect.arrayContaining([id]));

    await expect(
      relayRuntimeSignal(harness.env.client, id, 'register', registerPayload(id), relayTo(id)),
    ).rejects.toBeInstanceOf(WorkflowExecutionAlreadyStartedError);
  });
});

describe('operator view', () => {
  it('search attributes follow the status and pending plugins; current details show status and last restart', async () => {
    const id = uniqueId('ops');
    const handle = harness.env.client.workflow.getHandle(workspaceWorkflowId(id));
    await relayRuntimeSignal(harness.env.client, id, 'heartbeat', heartbeatPayload(id), relayTo(id));
    await waitForState(handle, (s) => s.status === 'online' && idle(s));

    const described = await handle.describe();
    expect(described.typedSearchAttributes.get(workspaceStatusKey)).toBe('online');
    expect(described.typedSearchAttributes.get(pluginsPendingKey)).toBe(0);
    // The static summary is checked on the dev server (test/e2e): the Java test server does not keep it.
    const metadata = await handle.query(workflowMetadataQuery);
    expect(metadata.currentDetails).toContain('**Status: online**');

    await handle.signal(restartSignal, { reason: 'operator drill' });
    await waitForState(handle, (s) => s.status === 'provisioning' && !s.restart.inFlight);
    expect((await handle.describe()).typedSearchAttributes.get(workspaceStatusKey)).toBe('provisioning');
    expect((await handle.query(workflowMetadataQuery)).currentDetails).toContain(
      '**Restarts:** 1, last: ` operator drill ` (by ` operator `',
    );
  });
});

describe('restart ids', () => {
  it('are unique across runs: a workflow terminated and started again does not reuse restart-1', async () => {
    const id = uniqueId('restart-ids');
    const first = await start(id);
    await first.signal(restartSignal, { reason: 'first', requester: 'test' });
    await waitForState(first, (s) => s.restart.count === 1 && !s.restart.inFlight);
    await first.terminate('as an operator would, to start over');

    const second = await start(id);
    await second.signal(restartSignal, { reason: 'second', requester: 'test' });
    await waitForState(second, (s) => s.restart.count === 1 && !s.restart.inFlight);

    const ids = harness.fake.restarts.filter((r) => r.startsWith(`${id}/`));
    expect(ids).toHaveLength(2);
    // A box driver skips a restart whose id it already did: the second must not look like the first.
    expect(new Set(ids).size).toBe(2);
  });
});

describe('one workflow version', () => {
  it('a run records no patch marker, whatever paths it takes', async () => {
    const id = uniqueId('unpatched');
    const handle = await start(id);
    await handle.signal(registerSignal, registerPayload(id));
    await waitForState(handle, (s) => s.status === 'online' && idle(s) && s.counters.reconcilesStarted === 1);
    // A restart (unique ids, revocation order) and a deprovision (retire, awaited effects).
    await handle.signal(restartSignal, { reason: 'drill', requester: 'test' });
    await waitForState(handle, (s) => s.restart.count === 1 && !s.restart.inFlight);
    await handle.signal(deprovisionSignal);
    expect(((await handle.result()) as WorkspaceState).status).toBe('removed');

    const { events } = await handle.fetchHistory();
    expect((events ?? []).filter((e) => e.markerRecordedEventAttributes?.markerName === 'core_patch')).toEqual([]);
    expect(harness.fake.restarts.filter((r) => r.startsWith(`${id}/`))).toHaveLength(1);
    expect(harness.fake.projections.filter((p) => p.workspaceId === id).map((p) => p.status)).toContain('removed');
  });
});

describe('projection writes', () => {
  it('a new run writes each projection row and diffs its plugins with local activities: markers, no activity tasks', async () => {
    const id = uniqueId('projection');
    const handle = await start(id);
    await handle.signal(registerSignal, registerPayload(id));
    await waitForState(handle, (s) => s.status === 'online' && idle(s));
    await handle.signal(deprovisionSignal);
    expect(((await handle.result()) as WorkspaceState).status).toBe('removed');

    const { events } = await handle.fetchHistory();
    const localActivities = (events ?? []).filter(
      (e) => e.markerRecordedEventAttributes?.markerName === 'core_local_activity',
    );
    const scheduled = (events ?? []).flatMap((e) => {
      const name = e.activityTaskScheduledEventAttributes?.activityType?.name;
      return name ? [name] : [];
    });
    const written = harness.fake.projections.filter((p) => p.workspaceId === id).map((p) => p.status);
    const diffs = harness.fake.reconcileCalls.filter((r) => r.workspaceId === id);
    expect(written).toEqual(expect.arrayContaining(['online', 'removed']));
    expect(diffs.length).toBeGreaterThan(0);
    expect(localActivities).toHaveLength(written.length + diffs.length);
    expect(scheduled).not.toContain('writeProjection');
    expect(scheduled).not.toContain('listPluginDiff');
  });
});

describe('promise stacks', () => {
  it('a cached workspace keeps no promise stacks (about 20 KB of heap each)', async () => {
    const id = uniqueId('stacks');
    const handle = await start(id);
    await handle.signal(registerSignal, registerPayload(id));
    await waitForState(handle, (s) => s.status === 'online' && idle(s));
    // The SDK's stack trace query lists the stacks it keeps for pending promises; the deadline
    // loop and the handlers always have some pending. Without the sandbox's own stack
    // formatter it lists them.
    expect(await handle.query<string>('__stack_trace')).toBe('');
  });
});
