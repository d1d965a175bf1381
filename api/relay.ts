/**
 * Relays a runtime call to its workspace workflow with signal-with-start: if the workflow
 * is running the signal is delivered to its current run (continue-as-new included); if no
 * workflow exists yet, one is started in `provisioning` and the signal is its first event.
 * So a heartbeat-only runtime needs no separate "create" call to be tracked.
 *
 * A workspace whose workflow completed (deprovisioned) is never restarted by a late call:
 * the id reuse policy only allows a new run after a failed, terminated or timed-out one,
 * and the server answers WorkflowExecutionAlreadyStartedError, which the API maps to 404.
 */
import type { Client } from '@temporalio/client';
import {
  TASK_QUEUE,
  heartbeatSignal,
  registerSignal,
  workspaceWorkflowId,
  type HeartbeatForward,
  type WorkspaceWorkflowInput,
} from '../workflows/definitions.js';
import { workspaceStartMetadata } from '../workflows/operator-view.js';
import type { workspaceWorkflow } from '../workflows/workspace.js';

const signals = { register: registerSignal, heartbeat: heartbeatSignal } as const;
export type RuntimeSignal = keyof typeof signals;

export interface RelayOptions {
  taskQueue?: string;
  /** Used only when this call starts the workflow. */
  start?: Omit<WorkspaceWorkflowInput, 'workspaceId' | 'carried'>;
}

export async function relayRuntimeSignal(
  client: Client,
  workspaceId: string,
  signal: RuntimeSignal,
  payload: unknown,
  options: RelayOptions = {},
  /** A heartbeat forwarded after others were coalesced: how many it stands for. */
  forward?: HeartbeatForward,
): Promise<void> {
  await client.workflow.signalWithStart<typeof workspaceWorkflow, [unknown, HeartbeatForward?]>('workspaceWorkflow', {
    workflowId: workspaceWorkflowId(workspaceId),
    taskQueue: options.taskQueue ?? TASK_QUEUE,
    args: [{ workspaceId, ...options.start }],
    signal: signals[signal],
    signalArgs: forward === undefined ? [payload] : [payload, forward],
    workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
    ...workspaceStartMetadata(workspaceId, options.start?.initialStatus ?? 'provisioning'),
  });
}
