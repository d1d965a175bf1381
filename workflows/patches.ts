/**
 * Every patch id the workflow checks with `patched()`, in one place, with what it guards and
 * when it can go. The lifecycle of a patch (as in Temporal's patching guide):
 *   1. `patched(id)`: new runs take the new path; runs recorded before it replay the old one.
 *   2. `deprecatePatch(id)`: once no open run predates the patch, the old path is deleted and
 *      the marker kept, so runs recorded during step 1 still replay.
 *   3. removal: once no open run predates step 2, the call goes.
 * "No open run predates X" is checked with
 *   temporal workflow count --query 'WorkflowType="workspaceWorkflow" AND ExecutionStatus="Running" AND StartTime < "<deploy time of X>"'
 * A workspace continues as new at least every 2,000 signals (about 66 hours of heartbeats, which
 * the API forwards about once per two minutes), and a new run takes every patch, so a week after
 * a deploy no run predates it.
 * Each step keeps the recorded histories of test/histories replaying (test/replay.test.ts).
 *
 * A new run records one marker, the latest baseline, which stands for every patch listed before
 * it: each marker a run records costs the worker about 10-17 KB of native memory for as long as
 * the run stays cached, and the fourteen a new run recorded tripled what a cached workspace cost.
 * Runs recorded before a baseline check each later patch on their own, as they did. A patch added
 * after the latest baseline is checked on its own until a later baseline takes it in.
 */
export const patches = {
  /** Per-step reconcile activities instead of the single legacy `reconcilePlugins`. Step 1. */
  pluginReconcileActivities: 'plugin-reconcile-activities',
  /** The SQL projection written on transitions. Step 1. */
  workspaceProjection: 'workspace-projection',
  /** The heartbeat watchdog runs the dead-detection evaluation. Step 1. */
  watchdogEvaluation: 'watchdog-evaluation',
  /** A run waits for its fire-and-forget effects before it completes or continues as new. Step 1. */
  awaitEffectsBeforeClose: 'await-effects-before-close',
  /** The WorkspaceStatus and PluginsPending search attributes. Step 1. */
  searchAttributes: 'search-attributes',
  /** Restart ids carry a random suffix, so a run started over never reuses one. Step 1. */
  uniqueRestartIds: 'unique-restart-ids',
  /** A removed workspace's tokens are revoked and its box stopped before the run completes. Step 1. */
  deprovisionRetiresBox: 'deprovision-retires-box',
  /** After a restart only the new runtime counts (Rules.newRuntimeAfterRestart). Step 1. */
  newRuntimeAfterRestart: 'new-runtime-after-restart',
  /** A delivery whose tracking row failed still restarts the box (Rules.restartAfterAnyDelivery). Step 1. */
  restartAfterAnyDelivery: 'restart-after-any-delivery',
  /** A dead verdict's revocation (of tokens minted before it) finishes before its restart. Step 1. */
  revokeBeforeRestart: 'revoke-before-restart',
  /** Offline is never parked and failed restarts are asked again (Rules.durableRecovery). Step 1. */
  durableRecovery: 'durable-recovery',
  /** The projection carries the delivery mode (Rules.deliveryModeInProjection). Step 1. */
  deliveryModeInProjection: 'delivery-mode-in-projection',
  /** External runtimes are never probed, declared dead, restarted or delivered to (Rules.externalRuntimes). Step 1. */
  externalRuntimes: 'external-runtimes',
  /** Liveness rules read the heartbeat ledger first (Rules.heartbeatLedger). Step 1. */
  heartbeatLedger: 'heartbeat-ledger',
  /** Removal, drift repair, resync and refresh of plugins (Rules.pluginLifecycle). Step 1. */
  pluginLifecycle: 'plugin-lifecycle',
  /** Every patch above, with one marker. Step 1. */
  baseline: 'baseline-1',
  /**
   * The projection write and the reconcile's plugin diff are local activities: each records one
   * marker in the workflow task that asked for it, instead of an activity task, its events and
   * a workflow task for its result. Step 1.
   */
  localActivities: 'local-activities',
  /** Every patch above, `baseline` included, with one marker. Step 1. */
  baseline2: 'baseline-2',
} as const;

/** The baselines, oldest first; each stands for every patch listed before it. */
export const baselines = [patches.baseline, patches.baseline2] as const;
export type BaselineId = (typeof baselines)[number];

/** A patch id other than the baselines. */
export type PatchId = Exclude<(typeof patches)[keyof typeof patches], BaselineId>;

const order: readonly string[] = Object.values(patches);

/**
 * The oldest baseline that stands for `id` (the first listed after it); undefined for a patch
 * listed after the latest baseline, which only its own marker takes.
 */
export function baselineFor(id: PatchId): BaselineId | undefined {
  return baselines.find((baseline) => order.indexOf(baseline) > order.indexOf(id));
}
