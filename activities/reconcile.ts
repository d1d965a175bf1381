import { log } from '@temporalio/activity';
import type { ReconcileRequest } from '../workflows/reconcile.js';

export interface ReconcileSummary {
  workspaceId: string;
  declared: number;
  installed: number;
}

/**
 * Converges the box's installed plugins with the workspace's declared set.
 *
 * The declared-plugin store, the box drivers and the per-plugin steps arrive with the
 * plugin-reconcile work; until then no workspace has declared plugins, so a pass finds
 * nothing to do and says so. The workflow already owns when and how often this runs.
 */
// eslint-disable-next-line @typescript-eslint/require-await -- activity contract is async
export async function reconcilePlugins(request: ReconcileRequest): Promise<ReconcileSummary> {
  log.info('reconcile: no declared-plugin store configured; nothing to reconcile', { ...request });
  return { workspaceId: request.workspaceId, declared: 0, installed: 0 };
}
