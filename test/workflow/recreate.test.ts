/**
 * Recreating workspaces from the database (scripts/recreate-workspaces.ts), on the dev server
 * and PostgreSQL: a run pinned to a build no worker serves is terminated and started again on the
 * current build, a workspace without a run gets one, each as the database describes it; a
 * managed one's box is looked at (restarted when not running), and coming online reconciles.
 * Also the dev server database another version made is moved aside (connection.ts).
 */
import type { WorkerDeploymentVersion } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { retireForeignDevServerDatabase } from '../../connection.js';
import type { Store } from '../../db/store.js';
import { recreateWorkspaces } from '../../scripts/recreate-workspaces.js';
import { registerSignal, workspaceWorkflowId } from '../../workflows/definitions.js';
import { makeVersionCurrent } from '../../worker.js';
import { createLocalEnv } from '../helpers/env.js';
import { FakeActivities } from '../helpers/fake-activities.js';
import { registerPayload } from '../helpers/payloads.js';
import { connectTestStore } from '../helpers/postgres.js';
import { createWorker, uniqueId, waitForState } from '../helpers/worker.js';
import { testScratchDir } from '../helpers/scratch.js';

describe('recreating workspaces from the database', () => {
  let env: TestWorkflowEnvironment;
  let store: Store;
  const fake = new FakeActivities();
  const workers: { worker: Worker; running: Promise<void> }[] = [];

  beforeAll(async () => {
    env = await createLocalEnv();
    // A database of its own: recreation reads every live workspace in it.
    store = await connectTestStore('recreate');
    await store.pool.query('TRUNCATE workspaces CASCADE');
  });

  afterAll(async () => {
    for (const { worker } of workers) if (worker.getState() === 'RUNNING') worker.shutdown();
    await Promise.all(workers.map(({ running }) => running));
    await store.close();
    await env.teardown();
  });

  async function startWorker(taskQueue: string, version: WorkerDeploymentVersion): Promise<Worker> {
    const worker = await createWorker(env, taskQueue, fake.activities, version);
    workers.push({ worker, running: worker.run() });
    return worker;
  }

  it('restarts stranded and missing runs on the current build, as the database describes each', async () => {
    const deploymentName = uniqueId('deployment');
    const taskQueue = uniqueId('recreate');
    const old = { deploymentName, buildId: 'old' };
    const current = { deploymentName, buildId: 'current' };
    const stranded = uniqueId('stranded');
    const missing = uniqueId('missing');
    const external = uniqueId('external');
    const removed = uniqueId('removed');
    for (const id of [stranded, missing, removed]) await store.workspaces.create(id, []);
    await store.workspaces.create(external, [], true);
    await store.workspaces.markRemoved(removed);
    for (const id of [stranded, missing]) fake.probeScript.set(id, ['not-running']);

    // A run of the old build, whose worker then goes away.
    const oldWorker = await startWorker(taskQueue, old);
    await makeVersionCurrent(env.nativeConnection, 'default', old);
    const strandedRun = await env.client.workflow.start('workspaceWorkflow', {
      taskQueue,
      workflowId: workspaceWorkflowId(stranded),
      args: [{ workspaceId: stranded }],
    });
    await waitForState(strandedRun, (s) => s.status === 'provisioning');
    oldWorker.shutdown();
    await startWorker(taskQueue, current);
    await makeVersionCurrent(env.nativeConnection, 'default', current);
    // Visibility lists the run once its record is written.
    const query = `WorkflowId = '${workspaceWorkflowId(stranded)}' AND ExecutionStatus = 'Running'`;
    for (let i = 0; i < 100 && (await env.client.workflow.count(query)).count === 0; i++)
      await new Promise((resolve) => setTimeout(resolve, 100));

    const result = await recreateWorkspaces({ client: env.client, store, taskQueue, lifecycle: {}, version: current });
    expect(result).toEqual({ terminated: 1, recreated: 3 });
    const oldRun = env.client.workflow.getHandle(strandedRun.workflowId, strandedRun.firstExecutionRunId);
    expect((await oldRun.describe()).status.name).toBe('TERMINATED');

    for (const id of [stranded, missing]) {
      const handle = env.client.workflow.getHandle(workspaceWorkflowId(id));
      const { raw } = await handle.describe();
      expect(raw.workflowExecutionInfo?.versioningInfo?.deploymentVersion?.buildId).toBe('current');
      // Its box did not run: declared dead and restarted, as a dispatcher's report would have it.
      const state = await waitForState(handle, (s) => s.restart.count === 1);
      expect(state).toMatchObject({ status: 'provisioning', runtime: 'managed' });
      expect(state.restart.lastReason).toBe('dead: not running and no recent heartbeat');
    }
    const externalState = await waitForState(
      env.client.workflow.getHandle(workspaceWorkflowId(external)),
      (s) => s.status === 'awaiting_agent',
    );
    expect(externalState.runtime).toBe('external');
    expect(fake.probes).not.toContain(external);
    await expect(env.client.workflow.getHandle(workspaceWorkflowId(removed)).describe()).rejects.toThrow();

    // The restarted runtime registers: online, and the reconcile runs.
    const handle = env.client.workflow.getHandle(workspaceWorkflowId(stranded));
    await waitForState(handle, (s) => !s.restart.inFlight);
    await handle.signal(registerSignal, registerPayload(stranded));
    const online = await waitForState(handle, (s) => s.status === 'online' && s.reconcile.lastFinishedAt !== null);
    expect(online.reconcile.lastTrigger).toBe('provisioning→online (register)');
    expect(fake.reconcileCalls.map((call) => call.workspaceId)).toContain(stranded);

    // Run again: every live workspace is served by the current build; nothing to do.
    expect(await recreateWorkspaces({ client: env.client, store, taskQueue, lifecycle: {}, version: current })).toEqual(
      { terminated: 0, recreated: 0 },
    );
  });
});

describe('a dev server database another version made', () => {
  it('is moved aside with its companion files; a new one is recorded as the current version', () => {
    const dir = testScratchDir('devdb');
    const dbFile = join(dir, 'temporal.db');
    for (const suffix of ['', '-wal', '.partitions']) writeFileSync(dbFile + suffix, 'old');

    const moved = retireForeignDevServerDatabase(dbFile, 'v2');
    expect(moved).toMatch(/temporal\.db\.unrecorded-\d+$/);
    for (const suffix of ['', '-wal', '.partitions']) {
      expect(existsSync(dbFile + suffix)).toBe(false);
      expect(readFileSync(`${moved ?? ''}${suffix}`, 'utf8')).toBe('old');
    }
    expect(readFileSync(`${dbFile}.server`, 'utf8').trim()).toBe('v2');

    // The dev server of v2 made the next file: it stays.
    writeFileSync(dbFile, 'new');
    expect(retireForeignDevServerDatabase(dbFile, 'v2')).toBeNull();
    expect(readFileSync(dbFile, 'utf8')).toBe('new');
    // Another version's dev server would move it aside again.
    expect(retireForeignDevServerDatabase(dbFile, 'v3')).toMatch(/temporal\.db\.v2-\d+$/);
  });
});
