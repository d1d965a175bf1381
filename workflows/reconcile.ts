/**
 * The workflow side of the declared-plugin reconcile: which activities run, in what order,
 * with which retry policy. Level-triggered and convergent: each pass diffs declared against
 * tracked, so a pass with nothing missing makes one query and nothing else.
 *
 * Per missing plugin: probe the box first. Present → write the tracking row only. Absent or
 * uncertain → stage (resolve to an immutable revision), deliver, write the tracking row.
 * Plugins proceed independently; one failing plugin does not stop the others. The restart
 * after deliveries is not here: the state machine requests it once per pass.
 */
import { ActivityFailure, ApplicationFailure, patched } from '@temporalio/workflow';
import { legacyReconcile, reconcileStep, reconcileTransfer } from './activities.js';
import { patches } from './patches.js';
import type { DeclaredPlugin } from '../db/store.js';
import type { LifecycleConfig } from './config.js';
import type { PluginOutcome, ReconcileReport } from './state-machine.js';

export interface ReconcileRequest {
  workspaceId: string;
  trigger: string;
}

export async function runReconcile(request: ReconcileRequest, config: LifecycleConfig): Promise<ReconcileReport> {
  if (!patched(patches.pluginReconcileActivities)) {
    // Runs started before per-step activities: the single legacy activity.
    await legacyReconcile(config.reconcileTimeoutMs).reconcilePlugins(request);
    return { declared: 0, outcomes: [] };
  }
  const diff = await reconcileStep.listPluginDiff.executeWithOptions(
    { summary: `diff declared plugins (${request.trigger})` },
    [request],
  );
  const outcomes = await Promise.all(diff.missing.map((plugin) => reconcilePlugin(request.workspaceId, plugin)));
  return { declared: diff.declared, ...(diff.declaredNames ? { declaredNames: diff.declaredNames } : {}), outcomes };
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
