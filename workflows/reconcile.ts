/**
 * The workflow side of the declared-plugin reconcile: which activities run, in what order,
 * with which retry policy. Runs inside the workflow sandbox.
 */
import { proxyActivities } from '@temporalio/workflow';
import type * as activities from '../activities/index.js';
import type { LifecycleConfig } from './config.js';

export interface ReconcileRequest {
  workspaceId: string;
  trigger: string;
}

export async function runReconcile(request: ReconcileRequest, config: LifecycleConfig): Promise<void> {
  const { reconcilePlugins } = proxyActivities<typeof activities>({
    startToCloseTimeout: config.reconcileTimeoutMs,
    retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m', maximumAttempts: 5 },
  });
  await reconcilePlugins(request);
}
