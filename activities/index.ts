/** Every activity the worker registers: the reconcile's steps and the lifecycle's effects. */
import { createLifecycleActivities } from './lifecycle.js';
import { createReconcileActivities, type ActivityDeps } from './reconcile.js';

export function createActivities(deps: ActivityDeps) {
  return { ...createReconcileActivities(deps), ...createLifecycleActivities(deps) };
}

export type Activities = ReturnType<typeof createActivities>;
export type { ActivityDeps } from './reconcile.js';
