/**
 * The declared-plugin reconcile's decisions: when a pass is asked for (coming online, a
 * register, a declaration, an operator, the periodic resync) and in which mode, one pass at a
 * time with exactly one follow-up for the triggers that arrive meanwhile, what a finished pass
 * changed, and the one restart per batch that loads what it delivered. The pass itself is the
 * workflow's (workflows/reconcile.ts).
 */
import type { LifecycleConfig } from '../config.js';
import { merged, refused, started, type Draft } from './draft.js';
import { requestRestart } from './restart.js';
import type {
  CommandAnswer,
  ReconcileMode,
  ReconcileOutcome,
  ReconcilePlan,
  ReconcileReport,
  WorkspaceState,
} from './types.js';

const reconcileModes: readonly ReconcileMode[] = ['diff', 'verify', 'refresh'];
function deeperMode(a: ReconcileMode, b: ReconcileMode): ReconcileMode {
  return reconcileModes.indexOf(a) >= reconcileModes.indexOf(b) ? a : b;
}

/**
 * A pass is asked for: it starts if none runs, else the running one owes exactly one follow-up,
 * in the deepest mode asked meanwhile. While cordoned an automatic request is held: one pass, in
 * the deepest mode asked, runs on uncordon; an operator's runs.
 */
export function requestReconcile(
  draft: Draft,
  trigger: string,
  mode: ReconcileMode = 'diff',
  byOperator = false,
): CommandAnswer {
  // The service has no box to deliver to: an external runtime loads its own plugins.
  if (draft.external) return refused('the runtime is external: it loads its own plugins');
  const reconcile = draft.state.reconcile;
  draft.state.counters.reconcilesRequested++;
  // Counted from the request, so a resync asked while a pass runs is not asked again meanwhile.
  if (mode !== 'diff') reconcile.lastVerifyAt = draft.at;
  if (reconcile.running) {
    reconcile.followUp = true;
    reconcile.followUpMode = deeperMode(reconcile.followUpMode, mode);
    reconcile.followUpByOperator ||= byOperator;
    draft.state.counters.reconcilesCoalesced++;
    return merged('into the pass running: one more pass follows it');
  }
  if (draft.cordoned && !byOperator) {
    reconcile.heldMode = deeperMode(reconcile.heldMode ?? 'diff', mode);
    draft.state.counters.reconcilesCoalesced++;
    return merged('held while cordoned');
  }
  startReconcile(draft, trigger, mode);
  return started(`a ${mode} pass`);
}

/**
 * Uncordon: the pass held while cordoned starts, or follows the running one; its mode, or null
 * when none was held or the runtime is not up (its way into online asks for a verify pass).
 */
export function releaseHeldReconcile(draft: Draft): ReconcileMode | null {
  const reconcile = draft.state.reconcile;
  const mode = reconcile.heldMode;
  reconcile.heldMode = null;
  const live = draft.state.status === 'online' || draft.state.status === 'degraded';
  if (mode === null || !live) return null;
  if (reconcile.running) {
    reconcile.followUp = true;
    reconcile.followUpMode = deeperMode(reconcile.followUpMode, mode);
  } else {
    startReconcile(draft, 'held while cordoned', mode);
  }
  return mode;
}

function startReconcile(draft: Draft, trigger: string, mode: ReconcileMode): void {
  const reconcile = draft.state.reconcile;
  reconcile.running = true;
  reconcile.lastTrigger = trigger;
  reconcile.lastStartedAt = draft.at;
  draft.state.counters.reconcilesStarted++;
  reconcile.mode = mode;
  reconcile.plan = null;
  const holdRepairs = repairsToHold(draft.state);
  draft.effects.push({ type: 'startReconcile', trigger, mode, ...(holdRepairs.length > 0 ? { holdRepairs } : {}) });
}

/** The declared set changed: a live box reconciles now; one that is not up will on its way into online. */
export function onPluginsDeclared(draft: Draft): void {
  if (draft.state.status === 'online' || draft.state.status === 'degraded') requestReconcile(draft, 'plugins declared');
}

/** An operator asks for a pass (verify, or refresh to take a branch's new head). */
export function onReconcileRequested(draft: Draft, mode: ReconcileMode, requester: string): CommandAnswer {
  if (draft.state.status === 'removed') return refused('the workspace is removed');
  return requestReconcile(draft, `requested by ${requester}`, mode, true);
}

/** The running pass has diffed (and listed the box): what it will change. */
export function onReconcilePlanned(draft: Draft, plan: ReconcilePlan): void {
  if (!draft.state.reconcile.running) return;
  draft.state.reconcile.plan = plan;
  // Pending until the pass finishes: what it delivers, removes and repairs (a refresh may find nothing newer).
  draft.state.pluginsPending = plan.deliveries + plan.removals + plan.repairs;
}

/** The plugins a pass delivered or removed: they load when the box restarts. */
function changedPlugins(report: ReconcileReport): number {
  return report.outcomes.filter((o) =>
    o.status === 'installed' ? o.via === 'delivered' : o.status === 'removed' || o.delivered === true,
  ).length;
}

/**
 * A pass that changed the box asks for a restart: before it reports, the workflow reads the
 * runtime's active tasks from the heartbeat ledger (ReconcileReport.activeTasks), so the restart
 * drains the work an online workspace's unforwarded heartbeats report.
 */
export function restartNeeded(report: ReconcileReport): boolean {
  return changedPlugins(report) > 0;
}

export function onReconcileFinished(
  draft: Draft,
  outcome: ReconcileOutcome,
  error: string | undefined,
  report: ReconcileReport | undefined,
): void {
  const state = draft.state;
  const reconcile = state.reconcile;
  if (!reconcile.running) return; // nothing was running: a stray completion changes nothing
  reconcile.running = false;
  reconcile.lastFinishedAt = draft.at;
  reconcile.lastOutcome = outcome;
  reconcile.lastError = outcome === 'failed' ? (error ?? 'unknown error') : null;
  if (outcome === 'failed') state.counters.reconcilesFailed++;
  if (report) {
    recordPluginOutcomes(draft, report);
    if (report.activeTasks !== undefined) state.activeTasks = report.activeTasks;
    const changed = changedPlugins(report);
    // One restart per reconcile batch, however many plugins were delivered or removed.
    if (changed > 0) requestRestart(draft, restartReason(report, changed), 'reconcile', 'reconcile');
  }
  const owed = reconcile.followUp;
  const owedMode = reconcile.followUpMode;
  const operatorOwed = reconcile.followUpByOperator;
  reconcile.followUp = false;
  reconcile.followUpMode = 'diff';
  reconcile.followUpByOperator = false;
  reconcile.plan = null;
  // A removed workspace has no box left to converge; a cordoned one holds the follow-up, unless
  // an operator asked for it.
  if (!owed || state.status === 'removed') return;
  if (draft.cordoned && !operatorOwed) reconcile.heldMode = deeperMode(reconcile.heldMode ?? 'diff', owedMode);
  else startReconcile(draft, 'follow-up of coalesced triggers', owedMode);
}

function restartReason(report: ReconcileReport, changed: number): string {
  const removed = report.outcomes.filter((o) => o.status === 'removed').length;
  return removed === 0
    ? `reconcile delivered ${changed} plugin(s)`
    : `reconcile delivered ${changed - removed} and removed ${removed} plugin(s)`;
}

function recordPluginOutcomes(draft: Draft, report: ReconcileReport): void {
  // A plugin no longer declared leaves the state, so it stays as small as the declaration.
  const declared = new Set(report.declaredNames);
  const removed = new Set(report.outcomes.flatMap((o) => (o.status === 'removed' ? [o.name] : [])));
  const plugins = Object.fromEntries(
    Object.entries(draft.state.plugins).filter(([name]) => declared.has(name) && !removed.has(name)),
  );
  const changes = { delivered: 0, removed: 0, repaired: 0, upgraded: 0 };
  for (const outcome of report.outcomes) {
    const attempts = (plugins[outcome.name]?.attempts ?? 0) + 1;
    if (outcome.status === 'removed') {
      changes.removed++;
      continue;
    }
    if (outcome.status === 'failed') {
      plugins[outcome.name] = {
        status: 'failed',
        via: null,
        revision: null,
        error: outcome.error,
        attempts,
        updatedAt: draft.at,
      };
      continue;
    }
    plugins[outcome.name] = {
      status: 'installed',
      via: outcome.via,
      revision: outcome.revision,
      error: null,
      attempts,
      updatedAt: draft.at,
      change: outcome.change ?? null,
    };
    if (outcome.change === 'repaired') changes.repaired++;
    else if (outcome.change === 'upgraded') changes.upgraded++;
    else if (outcome.via === 'delivered') changes.delivered++;
  }
  draft.state.plugins = plugins;
  draft.state.pluginsDeclaredCount = report.declared;
  // Whatever did not succeed is still owed (a failed removal too).
  draft.state.pluginsPending = report.outcomes.filter((o) => o.status === 'failed').length;
  const counters = draft.state.counters;
  counters.pluginsRemoved += changes.removed;
  counters.driftRepairs += changes.repaired;
  counters.pluginUpgrades += changes.upgraded;
  draft.state.reconcile.lastChanges = changes;
}

/**
 * Plugins a pass repaired right before the restart that followed it. If the box lost them again
 * by the first pass after that restart, delivering once more would restart the box in a loop:
 * they fail instead (the box does not keep them), and the next resync or operator request tries
 * again.
 */
export function repairsToHold(state: WorkspaceState): string[] {
  const restarted = state.restart.lastStartedAt;
  // Only the first pass after that restart: once one finished, a later loss is new drift.
  const finished = state.reconcile.lastFinishedAt;
  if (restarted === null || (finished !== null && finished > restarted)) return [];
  return Object.entries(state.plugins)
    .filter(([, plugin]) => plugin.change === 'repaired' && plugin.via === 'delivered' && plugin.updatedAt >= restarted)
    .map(([name]) => name)
    .sort();
}

/**
 * The periodic resync (a controller's resync): a verify pass every `resyncPeriodMs` (0: never)
 * while the runtime is up, counted from the last one asked for (or the last pass, before any).
 */
export function resyncDeadline(state: WorkspaceState, config: LifecycleConfig): number | null {
  if (config.resyncPeriodMs <= 0) return null;
  if (state.status !== 'online' && state.status !== 'degraded') return null;
  if (state.runtime === 'external') return null;
  const since = state.reconcile.lastVerifyAt ?? state.reconcile.lastStartedAt;
  return since === null ? null : Date.parse(since) + config.resyncPeriodMs;
}

/** A deadline fired: a resync that is due is asked for. */
export function resyncIfDue(draft: Draft): void {
  const resync = resyncDeadline(draft.state, draft.config);
  if (resync !== null && draft.now >= resync) requestReconcile(draft, 'periodic resync', 'verify');
}
