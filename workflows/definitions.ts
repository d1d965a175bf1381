/**
 * Signals and queries of the workspace workflow, defined once and shared by the workflow,
 * the API, the tests and the benchmarks.
 */
import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { LifecycleConfig } from './config.js';
import type { InitialStatus, WorkspaceState } from './state-machine.js';

export const TASK_QUEUE = 'workspace-lifecycle';

/** One workflow per workspace; this id is how every caller reaches it. */
export function workspaceWorkflowId(workspaceId: string): string {
  return `workspace:${workspaceId}`;
}

/** Payloads arrive unvalidated: the workflow validates them and records rejections in state. */
export const registerSignal = defineSignal<[payload: unknown]>('register');
export const heartbeatSignal = defineSignal<[payload: unknown]>('heartbeat');
export const deprovisionSignal = defineSignal('deprovision');

export const stateQuery = defineQuery<WorkspaceState>('state');

export interface WorkspaceWorkflowInput {
  workspaceId: string;
  /** Defaults to provisioning; awaiting_agent for externally run workspaces. */
  initialStatus?: InitialStatus;
  config?: Partial<LifecycleConfig>;
  /** Set only by continue-as-new: the state the previous run ended with. */
  carried?: WorkspaceState;
}
