/**
 * Relays a runtime call to its workspace workflow as a signal to its open run (continue-as-new
 * included). When no run is open (the workflow was never started, or an operator terminated
 * it), signal-with-start starts one as the database describes the workspace (an external
 * runtime's awaits its agent, a managed one provisions) with the signal as its first event. So a
 * heartbeat-only runtime needs no separate "create" call to be tracked, and a recreated
 * workflow keeps what the workspace is.
 *
 * A workspace whose workflow completed (deprovisioned) is never restarted by a late call:
 * the id reuse policy only allows a new run after a failed, terminated or timed-out one,
 * and the server answers WorkflowExecutionAlreadyStartedError, which the API maps to 404.
 */
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import {
  TASK_QUEUE,
  heartbeatSignal,
  registerSignal,
  workspaceWorkflowId,
  type WorkspaceWorkflowInput,
} from '../workflows/definitions.js';
import { workspaceStartMetadata } from '../workflows/operator-view.js';
import type { workspaceWorkflow } from '../workflows/workspace.js';

const signals = { register: registerSignal, heartbeat: heartbeatSignal } as const;
export type RuntimeSignal = keyof typeof signals;

export interface RelayOptions {
  taskQueue?: string;
  /** The input a run starts with, from the database; asked only when no run is open. */
  start: () => Promise<WorkspaceWorkflowInput>;
}

export async function relayRuntimeSignal(
  client: Client,
  workspaceId: string,
  signal: RuntimeSignal,
  payload: unknown,
  options: RelayOptions,
): Promise<void> {
  const workflowId = workspaceWorkflowId(workspaceId);
  try {
    await client.workflow.getHandle<typeof workspaceWorkflow>(workflowId).signal(signals[signal], payload);
    return;
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) throw err;
  }
  const input = await options.start();
  await client.workflow.signalWithStart<typeof workspaceWorkflow, [unknown]>('workspaceWorkflow', {
    workflowId,
    taskQueue: options.taskQueue ?? TASK_QUEUE,
    args: [input],
    signal: signals[signal],
    signalArgs: [payload],
    workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
    ...workspaceStartMetadata(workspaceId, input.initialStatus ?? 'provisioning'),
  });
}
