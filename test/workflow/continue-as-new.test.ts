/**
 * Continue-as-new on the real dev server (Temporal CLI), not the Java test server: the test
 * server accepts a continue-as-new completion even when signals arrived during that workflow
 * task and drops those signals, which the real server refuses to do (it fails the completion
 * and hands the new signals to the same run). Nothing here needs time skipping.
 */
import { expect, it } from 'vitest';
import { heartbeatSignal, registerSignal, workspaceWorkflowId } from '../../workflows/definitions.js';
import { createLocalEnv } from '../helpers/env.js';
import { heartbeatPayload, registerPayload } from '../helpers/payloads.js';
import { uniqueId, useWorkerHarness, waitForState } from '../helpers/worker.js';

const harness = useWorkerHarness('can-tests', createLocalEnv);

it('continue-as-new after many heartbeats keeps state and loses no signal sent around the boundary', async () => {
  const id = uniqueId('can');
  const handle = await harness.env.client.workflow.start('workspaceWorkflow', {
    taskQueue: harness.taskQueue,
    workflowId: workspaceWorkflowId(id),
    args: [{ workspaceId: id, config: { maxSignalsPerRun: 10 } }],
  });
  const firstRunId = handle.firstExecutionRunId;
  await handle.signal(registerSignal, registerPayload(id));
  await waitForState(handle, (s) => s.status === 'online' && !s.reconcile.running);

  // 120 heartbeats: in bursts of 6, so many land while a run is deciding to continue as new,
  // then one at a time, so runs also end on an exact signal budget.
  const latest = harness.env.client.workflow.getHandle(workspaceWorkflowId(id));
  for (let burst = 0; burst < 10; burst++) {
    await Promise.all(Array.from({ length: 6 }, () => latest.signal(heartbeatSignal, heartbeatPayload(id))));
  }
  for (let i = 0; i < 60; i++) await latest.signal(heartbeatSignal, heartbeatPayload(id, { uptime_seconds: i }));

  const state = await waitForState(latest, (s) => s.counters.heartbeats === 120);
  // A run absorbs the signals that arrive while it closes, so runs overshoot the budget a little.
  expect(state.counters.runs).toBeGreaterThanOrEqual(3);
  expect(state.counters.registers).toBe(1);
  expect(state.status).toBe('online');
  expect(state.url).toBe(`http://box-${id}.internal:8000`);
  expect(state.lastHeartbeat?.uptimeSeconds).toBe(59);
  expect(state.counters.reconcilesStarted).toBe(1);
  expect(harness.fake.reconcileCalls.filter((c) => c.workspaceId === id)).toHaveLength(1);
  expect((await latest.describe()).runId).not.toBe(firstRunId);
});
