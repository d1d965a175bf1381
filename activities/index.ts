/**
 * Every activity the worker registers: the reconcile's steps, the lifecycle's effects and the
 * fleet liveness controller's sweep.
 */
import { createFleetLivenessActivities } from './fleet-liveness.js';
import { createLifecycleActivities } from './lifecycle.js';
import { createReconcileActivities, type ActivityDeps } from './reconcile.js';

export function createActivities(deps: ActivityDeps) {
  return {
    ...createReconcileActivities(deps),
    ...createLifecycleActivities(deps),
    ...createFleetLivenessActivities(deps),
  };
}

export type Activities = ReturnType<typeof createActivities>;
export type { ActivityDeps } from './reconcile.js';
