/**
 * The workflow side of the declared-plugin reconcile: which activities run, in what order,
 * with which retry policy. Level-triggered and convergent: each pass diffs declared against
 * tracked, so a pass with nothing missing makes one query and nothing else.
 *
 * Per missing plugin: probe the box first. Present → write the tracking row only. Absent or
 * uncertain → stage (resolve to an immutable revision), deliver, write the tracking row.
 * Per tracked plugin no longer declared: remove it from the box, then delete its tracking row.
 * A verify pass also lists the box's plugins once and delivers again what drifted; a refresh
 * pass also stages every tracked plugin again and delivers the ones whose source moved on.
 * Plugins proceed independently; one failing plugin does not stop the others. The restart
 * after deliveries and removals is not here: the state machine requests it once per pass.
 */
import { ActivityFailure, ApplicationFailure } from '@temporalio/workflow';
import { localStep, reconcileStep, reconcileTransfer } from './activities.js';
import { findDrift, type Drift } from './plugin-drift.js';
import type { DeclaredPlugin } from '../db/tables/declared-plugins.js';
import type { TrackedPlugin } from '../activities/reconcile.js';
import type { PluginChange, PluginOutcome, ReconcileMode, ReconcilePlan, ReconcileReport } from './state-machine.js';

export interface ReconcilePass {
  workspaceId: string;
  trigger: string;
  mode: ReconcileMode;
  /** Plugins not to deliver again if they drifted (state-machine: repairsToHold). */
  holdRepairs?: string[];
}

export async function runReconcile(
  pass: ReconcilePass,
  /** Told what the pass will change once it has diffed (and listed the box), before it changes anything. */
  onPlan: (plan: ReconcilePlan) => void,
): Promise<ReconcileReport> {
  const { workspaceId, mode } = pass;
  const diff = await localStep.listPluginDiff.executeWithOptions(
    { summary: `diff declared plugins (${pass.trigger})` },
    [{ workspaceId, trigger: pass.trigger }],
  );
  const { tracked, undeclared } = diff;
  let drift: Drift = { redeliver: [], rerecord: [] };
  let verifyError: string | undefined;
  if (mode !== 'diff' && tracked.length > 0) {
    try {
      const observed = await reconcileStep.listBoxPlugins.executeWithOptions(
        { summary: `list the box's plugins (${mode})` },
        [{ workspaceId }],
      );
      drift = findDrift(tracked, observed);
    } catch (err) {
      // The rest of the pass goes on; the next verify (register, resync, request) looks again.
      verifyError = `could not list the box's plugins to verify them: ${failureMessage(err)}`;
    }
  }
  const held = new Set(pass.holdRepairs ?? []);
  const relapsed = drift.redeliver.filter((plugin) => held.has(plugin.name));
  drift = { ...drift, redeliver: drift.redeliver.filter((plugin) => !held.has(plugin.name)) };
  // A refresh stages again what the service delivered; a plugin the box's image provides follows
  // the image. Each plugin gets one outcome per pass.
  const handled = new Set(
    [...drift.redeliver, ...relapsed, ...drift.rerecord.map(({ plugin }) => plugin)].map((plugin) => plugin.name),
  );
  const refreshes =
    mode === 'refresh'
      ? tracked.filter((plugin) => plugin.installedVia === 'delivered' && !handled.has(plugin.name))
      : [];
  onPlan({
    deliveries: diff.missing.length,
    removals: undeclared.length,
    repairs: drift.redeliver.length + drift.rerecord.length + relapsed.length,
    refreshes: refreshes.length,
  });
  const outcomes = await Promise.all([
    ...diff.missing.map((plugin) => reconcilePlugin(workspaceId, plugin)),
    ...undeclared.map((plugin) => removePlugin(workspaceId, plugin)),
    ...drift.redeliver.map((plugin) => deliverAgain(workspaceId, plugin, 'repaired')),
    ...drift.rerecord.map(({ plugin, revision }) => rerecord(workspaceId, plugin, revision)),
    ...refreshes.map((plugin) => deliverAgain(workspaceId, plugin, 'upgraded')),
  ]);
  const relapses = relapsed.map((plugin): PluginOutcome => ({
    name: plugin.name,
    status: 'failed',
    error:
      'drifted again right after its repair and the restart: the box does not keep it (check what rewrites ' +
      "the box's plugin directory); the next resync or POST /workspaces/:id/reconcile tries again",
  }));
  return {
    declared: diff.declared,
    declaredNames: diff.declaredNames,
    outcomes: [...outcomes.filter((outcome) => outcome !== null), ...relapses],
    ...(verifyError === undefined ? {} : { verifyError }),
  };
}

/**
 * The mirror of a delivery: off the box first (whole), then the tracking row; a crash between
 * the two leaves the row, and the next pass removes again (already gone: done) and deletes it.
 */
async function removePlugin(workspaceId: string, plugin: TrackedPlugin): Promise<PluginOutcome> {
  const { name } = plugin;
  let removed = false;
  try {
    await reconcileTransfer.removePlugin.executeWithOptions(
      { summary: `remove plugin ${name} from the box (no longer declared)` },
      [{ workspaceId, pluginName: name }],
    );
    removed = true;
    await reconcileStep.deleteTrackingRow.executeWithOptions({ summary: `forget plugin ${name} (removed)` }, [
      { workspaceId, pluginName: name },
    ]);
    return { name, status: 'removed' };
  } catch (err) {
    return { name, status: 'failed', error: failureMessage(err), ...(removed ? { delivered: true as const } : {}) };
  }
}

/**
 * Delivers a tracked plugin again from its declared source: after drift (`repaired`), or when a
 * refresh finds a newer revision (`upgraded`; null when the source has not moved).
 */
async function deliverAgain(
  workspaceId: string,
  plugin: TrackedPlugin,
  change: PluginChange,
): Promise<PluginOutcome | null> {
  const { name, source } = plugin;
  let delivered = false;
  try {
    const staged = await reconcileTransfer.stagePlugin.executeWithOptions(
      { summary: `stage plugin ${name} from ${source} (${change === 'repaired' ? 'drift' : 'refresh'})` },
      [{ workspaceId, pluginName: name, source }],
    );
    if (change === 'upgraded' && staged.revision === plugin.revision) return null;
    const revision = staged.revision.slice(0, 12);
    await reconcileTransfer.deliverPlugin.executeWithOptions(
      { summary: `deliver plugin ${name} @${revision} (${change})` },
      [{ workspaceId, plugin: staged }],
    );
    delivered = true;
    await reconcileStep.recordInstalled.executeWithOptions(
      { summary: `record plugin ${name} ${change} @${revision}` },
      [{ workspaceId, pluginName: name, source, revision: staged.revision, installedVia: 'delivered' }],
    );
    return { name, status: 'installed', via: 'delivered', revision: staged.revision, change };
  } catch (err) {
    return { name, status: 'failed', error: failureMessage(err), ...(delivered ? { delivered: true as const } : {}) };
  }
}

/** A plugin the box's image provides, at another revision now: the row follows the box. */
async function rerecord(workspaceId: string, plugin: TrackedPlugin, revision: string): Promise<PluginOutcome> {
  const { name, source } = plugin;
  try {
    await reconcileStep.recordInstalled.executeWithOptions(
      { summary: `record plugin ${name} at ${revision} (changed in the box's image)` },
      [{ workspaceId, pluginName: name, source, revision, installedVia: 'boot' }],
    );
    return { name, status: 'installed', via: 'boot', revision, change: 'repaired' };
  } catch (err) {
    return { name, status: 'failed', error: failureMessage(err) };
  }
}

async function reconcilePlugin(workspaceId: string, plugin: DeclaredPlugin): Promise<PluginOutcome> {
  const { name, source } = plugin;
  const base = { workspaceId, pluginName: name, source };
  // Each activity's summary names the plugin, so the UI's event history reads as the reconcile did.
  let delivered = false;
  try {
    const probe = await reconcileStep.probePlugin.executeWithOptions({ summary: `probe plugin ${name} on the box` }, [
      { workspaceId, pluginName: name },
    ]);
    if (probe.presence === 'present') {
      await reconcileStep.recordInstalled.executeWithOptions({ summary: `record plugin ${name} installed at boot` }, [
        { ...base, revision: probe.revision, installedVia: 'boot' },
      ]);
      return { name, status: 'installed', via: 'boot', revision: probe.revision };
    }
    const staged = await reconcileTransfer.stagePlugin.executeWithOptions(
      { summary: `stage plugin ${name} from ${source}` },
      [{ workspaceId, pluginName: name, source }],
    );
    const revision = staged.revision.slice(0, 12);
    await reconcileTransfer.deliverPlugin.executeWithOptions({ summary: `deliver plugin ${name} @${revision}` }, [
      { workspaceId, plugin: staged },
    ]);
    delivered = true;
    await reconcileStep.recordInstalled.executeWithOptions(
      { summary: `record plugin ${name} delivered @${revision}` },
      [{ ...base, revision: staged.revision, installedVia: 'delivered' }],
    );
    return { name, status: 'installed', via: 'delivered', revision: staged.revision };
  } catch (err) {
    return { name, status: 'failed', error: failureMessage(err), ...(delivered ? { delivered: true as const } : {}) };
  }
}

export function failureMessage(err: unknown): string {
  if (err instanceof ActivityFailure && err.cause instanceof ApplicationFailure) return err.cause.message;
  if (err instanceof ActivityFailure && err.cause instanceof Error) return err.cause.message;
  return err instanceof Error ? err.message : String(err);
}
