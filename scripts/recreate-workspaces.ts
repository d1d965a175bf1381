/**
 * Recreates the workflows of the workspaces the database holds that no worker of the current
 * build serves: those with no running workflow (a dev server database moved aside, a terminated
 * run), and those whose run is pinned to another build (its workers are gone: `npm start` runs
 * one worker, of its own build). Each is started from what the database knows (an external
 * runtime's workspace awaits its agent, a managed one provisions), and a managed one's box is
 * then looked at as a dispatcher that cannot reach it would: running, its runtime's next call
 * brings the workspace online; not running, it is declared dead and restarted. Coming online
 * reconciles its plugins. What the old run held besides the database (its counters, recent
 * transitions) is not kept.
 */
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { WorkerDeploymentVersion } from '@temporalio/common';
import type { Store } from '../db/store.js';
import type { LifecycleConfig } from '../workflows/config.js';
import {
  FLEET_LIVENESS_WORKFLOW_ID,
  dispatchFailedUpdate,
  workspaceStartInput,
  workspaceWorkflowId,
  type WorkspaceWorkflowInput,
} from '../workflows/definitions.js';
import { workspaceStartMetadata } from '../workflows/operator-view.js';
import type { workspaceWorkflow } from '../workflows/workspace.js';

export interface RecreateOptions {
  client: Client;
  store: Store;
  taskQueue: string;
  /** The lifecycle overrides the API starts workflows with. */
  lifecycle: Partial<LifecycleConfig>;
  /** The build the workflows must run on; null for an unversioned worker. */
  version: WorkerDeploymentVersion | null;
  /** How many workspaces are recreated at once. */
  concurrency?: number;
}

export interface Recreated {
  /** Runs pinned to another build, terminated before their workspace was recreated. */
  terminated: number;
  recreated: number;
}

const RUNNING = `WorkflowType = 'workspaceWorkflow' AND ExecutionStatus = 'Running'`;

export async function recreateWorkspaces(options: RecreateOptions): Promise<Recreated> {
  const { client, store, taskQueue, version } = options;
  const onQueue = `${RUNNING} AND TaskQueue = '${taskQueue}'`;
  const running = new Map<string, string>(); // workflow id → run id
  for await (const execution of client.workflow.list({ query: onQueue }))
    running.set(execution.workflowId, execution.runId);
  const served = new Set<string>();
  if (version === null) for (const id of running.keys()) served.add(id);
  else {
    const current = `${version.deploymentName}:${version.buildId}`;
    const query = `${onQueue} AND TemporalWorkerDeploymentVersion = '${current}'`;
    for await (const execution of client.workflow.list({ query })) served.add(execution.workflowId);
  }

  const stale = (await store.workspaces.live()).filter(
    ({ workspaceId }) => !served.has(workspaceWorkflowId(workspaceId)),
  );
  const result: Recreated = { terminated: 0, recreated: 0 };
  const recreate = async ({ workspaceId, external }: { workspaceId: string; external: boolean }): Promise<void> => {
    const workflowId = workspaceWorkflowId(workspaceId);
    const runId = running.get(workflowId);
    if (runId !== undefined) {
      // By its run id: a run started since the listing is never the one terminated.
      await client.workflow
        .getHandle(workflowId, runId)
        .terminate('pinned to a build no running worker serves: recreated from the database');
      result.terminated++;
    }
    const input: WorkspaceWorkflowInput = workspaceStartInput(workspaceId, external, options.lifecycle);
    let handle;
    try {
      handle = await client.workflow.start<typeof workspaceWorkflow>('workspaceWorkflow', {
        taskQueue,
        workflowId,
        args: [input],
        // A removed workspace's completed workflow stays completed.
        workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
        ...workspaceStartMetadata(workspaceId, input.initialStatus ?? 'provisioning'),
      });
    } catch (err) {
      // Started meanwhile (a runtime's call) or removed: nothing to recreate.
      if (err instanceof WorkflowExecutionAlreadyStartedError) return;
      throw err;
    }
    result.recreated++;
    if (!external) await handle.executeUpdate(dispatchFailedUpdate, { args: [{ caller: 'recreate', operator: true }] });
  };

  const queue = [...stale];
  const worker = async (): Promise<void> => {
    for (let next = queue.shift(); next !== undefined; next = queue.shift()) await recreate(next);
  };
  await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? 16) }, worker));
  return result;
}

/**
 * Terminates the fleet liveness controller's run when it is pinned to a build other than
 * `version` (no worker of that build is left to run it); the caller then starts it again
 * (worker.ts startFleetLiveness). Its state (counts of sweeps) is not kept. True when it did.
 */
export async function retireForeignFleetLiveness(client: Client, version: WorkerDeploymentVersion): Promise<boolean> {
  const handle = client.workflow.getHandle(FLEET_LIVENESS_WORKFLOW_ID);
  let described;
  try {
    described = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return false;
    throw err;
  }
  const pinnedTo = described.raw.workflowExecutionInfo?.versioningInfo?.deploymentVersion?.buildId;
  if (described.status.name !== 'RUNNING' || !pinnedTo || pinnedTo === version.buildId) return false;
  await client.workflow
    .getHandle(FLEET_LIVENESS_WORKFLOW_ID, described.runId)
    .terminate('pinned to a build no running worker serves: started again on the current one');
  return true;
}
