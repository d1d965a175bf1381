/**
 * Worker Versioning on the dev server (the time-skipping test server has no worker deployments):
 * a workspace's run stays on the build that started it while another build's workers poll, and
 * moves to the deployment's current build when it continues as new, its state carried.
 */
import type { WorkflowHandle } from '@temporalio/client';
import type { WorkerDeploymentVersion } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { heartbeatSignal, registerSignal, workspaceWorkflowId } from '../../workflows/definitions.js';
import { makeVersionCurrent } from '../../worker.js';
import { createLocalEnv } from '../helpers/env.js';
import { FakeActivities } from '../helpers/fake-activities.js';
import { heartbeatPayload, registerPayload } from '../helpers/payloads.js';
import { createWorker, uniqueId, waitForState } from '../helpers/worker.js';

let env: TestWorkflowEnvironment;
const workers: { worker: Worker; running: Promise<void> }[] = [];

beforeAll(async () => {
  env = await createLocalEnv();
});

afterAll(async () => {
  for (const { worker } of workers) worker.shutdown();
  await Promise.all(workers.map(({ running }) => running));
  await env.teardown();
});

async function startWorker(taskQueue: string, version: WorkerDeploymentVersion): Promise<void> {
  const worker = await createWorker(env, taskQueue, new FakeActivities().activities, version);
  workers.push({ worker, running: worker.run() });
}

/** The run the workflow id leads to now, and the build it is pinned to. */
async function currentRun(handle: WorkflowHandle): Promise<{ runId: string; buildId: string | undefined }> {
  const { runId, raw } = await handle.describe();
  const versioning = raw.workflowExecutionInfo?.versioningInfo;
  return { runId, buildId: versioning?.deploymentVersion?.buildId ?? undefined };
}

it('a run stays on the build that started it and moves to the current build as it continues as new', async () => {
  const deploymentName = uniqueId('deployment');
  const taskQueue = uniqueId('versioning');
  const first = { deploymentName, buildId: 'first' };
  const second = { deploymentName, buildId: 'second' };
  await startWorker(taskQueue, first);
  expect(await makeVersionCurrent(env.nativeConnection, 'default', first)).toBe('made current');
  expect(await makeVersionCurrent(env.nativeConnection, 'default', first)).toBe('already current');

  const id = uniqueId('pinned');
  await env.client.workflow.start('workspaceWorkflow', {
    taskQueue,
    workflowId: workspaceWorkflowId(id),
    args: [{ workspaceId: id }],
  });
  const handle = env.client.workflow.getHandle(workspaceWorkflowId(id));
  await handle.signal(registerSignal, registerPayload(id));
  await waitForState(handle, (s) => s.status === 'online' && !s.reconcile.running);
  const started = await currentRun(handle);
  expect(started.buildId).toBe('first');

  // Another build polls, but the first is current: the run stays where it is.
  await startWorker(taskQueue, second);
  await handle.signal(heartbeatSignal, heartbeatPayload(id));
  await waitForState(handle, (s) => s.counters.heartbeats === 1);
  expect(await currentRun(handle)).toEqual(started);
  expect(await makeVersionCurrent(env.nativeConnection, 'default', second, { onlyIfNone: true })).toBe(
    'another is current',
  );

  // The second becomes current: the run learns it at its next workflow task and continues as new
  // onto it. Heartbeats give it tasks until it has.
  expect(await makeVersionCurrent(env.nativeConnection, 'default', second)).toBe('made current');
  const deadline = Date.now() + 30_000;
  let moved = await currentRun(handle);
  while (moved.buildId !== 'second' && Date.now() < deadline) {
    await handle.signal(heartbeatSignal, heartbeatPayload(id));
    await new Promise((resolve) => setTimeout(resolve, 200));
    moved = await currentRun(handle);
  }
  expect(moved.buildId).toBe('second');
  expect(moved.runId).not.toBe(started.runId);
  const state = await waitForState(handle, (s) => s.counters.runs === 1);
  expect(state).toMatchObject({ status: 'online', url: `http://box-${id}.internal:8000` });
  expect(state.counters.registers).toBe(1);
});
