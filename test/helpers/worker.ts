import type { WorkflowHandle } from '@temporalio/client';
import type { WorkerDeploymentVersion } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, expect, inject } from 'vitest';
import { FakeActivities } from './fake-activities.js';
import type { Activities } from '../../activities/index.js';
import { defaultLifecycleConfig } from '../../workflows/config.js';
import {
  dispatchFailedUpdate,
  leaseExpiredSignal,
  registerSignal,
  stateQuery,
  workspaceWorkflowId,
  type DispatchVerdict,
} from '../../workflows/definitions.js';
import { registerPayload } from './payloads.js';
import { pinnedDeployment } from '../../worker.js';
import type { WorkspaceState } from '../../workflows/state-machine.js';

/**
 * A real worker on a fresh task queue, running the real workflow with the given activities:
 * unversioned, or as `version` of its deployment, its runs pinned (a dev server only).
 */
export async function createWorker(
  env: TestWorkflowEnvironment,
  taskQueue: string,
  acts: Activities,
  version?: WorkerDeploymentVersion,
): Promise<Worker> {
  return Worker.create({
    connection: env.nativeConnection,
    taskQueue,
    workflowBundle: { codePath: inject('workflowBundlePath') },
    activities: acts,
    ...(version === undefined ? {} : { workerDeploymentOptions: pinnedDeployment(version) }),
  });
}

/** Polls the state query until the predicate holds; the workflow's own time is untouched. */
export async function waitForState(
  handle: WorkflowHandle,
  predicate: (state: WorkspaceState) => boolean,
  timeoutMs = 15_000,
): Promise<WorkspaceState> {
  const deadline = Date.now() + timeoutMs;
  let last: WorkspaceState | undefined;
  while (Date.now() < deadline) {
    last = await handle.query(stateQuery);
    if (predicate(last)) return last;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`state never matched; last state: ${JSON.stringify(last, null, 2)}`);
}

/**
 * What the fleet liveness controller does once it finds the workspace's lease expired: signals
 * `leaseExpired` for the contract the workspace last published.
 */
export async function expireLease(handle: WorkflowHandle): Promise<void> {
  const { livenessContract } = await handle.query(stateQuery);
  await handle.signal(leaseExpiredSignal, {
    version: livenessContract?.version ?? 0,
    silentForMs: livenessContract?.leaseTtlMs ?? 0,
  });
}

let sequence = 0;
export function uniqueId(prefix: string): string {
  sequence++;
  return `${prefix}-${process.pid}-${sequence}`;
}

export interface Harness {
  /** Set in beforeAll. */
  env: TestWorkflowEnvironment;
  fake: FakeActivities;
  taskQueue: string;
}

/**
 * One Temporal environment and one running worker with FakeActivities for a test file:
 * registers the beforeAll/afterAll that start and stop them.
 */
export function useWorkerHarness(
  name: string,
  createEnv: () => Promise<TestWorkflowEnvironment>,
  activities: (fake: FakeActivities) => Activities = (fake) => fake.activities,
): Harness {
  const harness = { taskQueue: uniqueId(name) } as Harness;
  let worker: Worker;
  let running: Promise<void>;
  beforeAll(async () => {
    harness.env = await createEnv();
    const env = harness.env;
    harness.fake = new FakeActivities({ clock: () => env.currentTimeMs(), client: env.client });
    worker = await createWorker(harness.env, harness.taskQueue, activities(harness.fake));
    running = worker.run();
  });
  afterAll(async () => {
    worker.shutdown();
    await running;
    await harness.env.teardown();
  });
  return harness;
}

/**
 * A workspace started on the harness's worker and registered: online, its first pass done, its
 * box probes answering `probes` in order (then `running`).
 */
export async function registeredWorkspace(
  harness: Harness,
  prefix: string,
  probes: ('running' | 'not-running' | 'error')[] = [],
): Promise<{ id: string; handle: WorkflowHandle }> {
  const id = uniqueId(prefix);
  harness.fake.probeScript.set(id, [...probes]);
  const handle = await harness.env.client.workflow.start('workspaceWorkflow', {
    taskQueue: harness.taskQueue,
    workflowId: workspaceWorkflowId(id),
    args: [{ workspaceId: id }],
  });
  await handle.signal(registerSignal, registerPayload(id));
  await waitForState(handle, (s) => s.status === 'online' && !s.reconcile.running);
  return { id, handle };
}

/** Waits until the harness's ledger holds the contract the workflow last published; its state then. */
export async function contractPublished(harness: Harness, id: string, handle: WorkflowHandle): Promise<WorkspaceState> {
  let state = await handle.query(stateQuery);
  await expect
    .poll(async () => {
      state = await handle.query(stateQuery);
      return harness.fake.ledger.rows.get(id)?.wantVersion === state.livenessContract?.version;
    })
    .toBe(true);
  return state;
}

/**
 * Sends the dispatchFailed Update and lets the test server skip through its waits (the 2 s
 * fresh-heartbeat wait and the 500 ms re-probe) instead of spending them in real time.
 */
export async function dispatchFailed(harness: Harness, handle: WorkflowHandle): Promise<DispatchVerdict> {
  const update = await handle.startUpdate(dispatchFailedUpdate, {
    args: [{ caller: 'test', error: 'connection refused' }],
    waitForStage: 'ACCEPTED',
  });
  await harness.env.sleep(defaultLifecycleConfig.freshHeartbeatWaitMs + defaultLifecycleConfig.reprobeDelayMs + 100);
  return update.result();
}
