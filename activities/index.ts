import { reconcilePlugins } from './legacy.js';
import { createReconcileActivities, type ReconcileDeps } from './reconcile.js';

export function createActivities(deps: ReconcileDeps) {
  return { ...createReconcileActivities(deps), reconcilePlugins };
}

export type Activities = ReturnType<typeof createActivities>;
export type { ReconcileDeps } from './reconcile.js';
