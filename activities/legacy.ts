import { log } from '@temporalio/activity';

/**
 * Deprecated: the single-activity reconcile of workflows started before the
 * `plugin-reconcile-activities` patch. Kept registered so those runs can finish; new runs
 * use the per-step activities in reconcile.ts. Remove once no such run is open.
 */
// eslint-disable-next-line @typescript-eslint/require-await -- activity contract is async
export async function reconcilePlugins(request: { workspaceId: string; trigger: string }): Promise<void> {
  log.warn('legacy reconcile activity called by a pre-patch run; the next online transition reconciles fully', {
    ...request,
  });
}
