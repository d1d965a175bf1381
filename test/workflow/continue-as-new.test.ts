/**
 * Continue-as-new on the real dev server (Temporal CLI), not the Java test server: the test
 * server accepts a continue-as-new completion even when signals arrived during that workflow
 * task and drops those signals, which the real server refuses to do (it fails the completion
 * and hands the new signals to the same run). Nothing here needs time skipping.
 */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { heartbeatSignal, registerSignal, workspaceWorkflowId } from '../../workflows/definitions.js';
import { createLocalEnv } from '../helpers/env.js';
import { FakeActivities } from '../helpers/fake-activities.js';
import { heartbeatPayload, registerPayload } from '../helpers/payloads.js';
import { createWorker, uniqueId, waitForState } from '../helpers/worker.js';

let env: TestWorkflowEnvironment;
let fake: FakeActivities;
let worker: Worker;
let running: Promise<void>;
const taskQueue = uniqueId('can-tests');

beforeAll(async () => {
  env = await createLocalEnv();
  fake = new FakeActivities();
  worker = await createWorker(env, taskQueue, fake.activities);
  running = worker.run();
});

afterAll(async () => {
  worker.shutdown();
  await running;
  await env.teardown();
});

it('continue-as-new after many heartbeats keeps state and loses no signal sent around the boundary', async () => {
  const id = uniqueId('can');
  const handle = await env.client.workflow.start('workspaceWorkflow', {
    taskQueue,
    workflowId: workspaceWorkflowId(id),
    args: [{ workspaceId: id, config: { maxSignalsPerRun: 10 } }],
  });
  const firstRunId = handle.firstExecutionRunId;
  await handle.signal(registerSignal, registerPayload(id));
  await waitForState(handle, (s) => s.status === 'online' && !s.reconcile.running);

  // 120 heartbeats: in bursts of 6, so many land while a run is deciding to continue as new,
  // then one at a time, so runs also end on an exact signal budget.
  const latest = env.client.workflow.getHandle(workspaceWorkflowId(id));
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
  expect(fake.reconcileCalls.filter((c) => c.workspaceId === id)).toHaveLength(1);
  expect((await latest.describe()).runId).not.toBe(firstRunId);
});
