/**
 * Every activity the worker registers: the reconcile's steps, the lifecycle's effects, and the
 * legacy single-step reconcile that runs started before the per-step activities still call.
 */
import { reconcilePlugins } from './legacy.js';
import { createLifecycleActivities } from './lifecycle.js';
import { createReconcileActivities, type ActivityDeps } from './reconcile.js';

export function createActivities(deps: ActivityDeps) {
  return { ...createReconcileActivities(deps), ...createLifecycleActivities(deps), reconcilePlugins };
}

export type Activities = ReturnType<typeof createActivities>;
export type { ActivityDeps } from './reconcile.js';
