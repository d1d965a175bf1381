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
import { ActivityFailure, ApplicationFailure, patched, proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import type { DeclaredPlugin } from '../db/store.js';
import type { LifecycleConfig } from './config.js';
import type { PluginOutcome, ReconcileReport } from './state-machine.js';

export interface ReconcileRequest {
  workspaceId: string;
  trigger: string;
}

/** Box and store operations: short, retried with backoff on transient trouble. */
const boxRetry = { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 6 };

export async function runReconcile(request: ReconcileRequest, config: LifecycleConfig): Promise<ReconcileReport> {
  const acts = proxyActivities<Activities>({ startToCloseTimeout: '1m', retry: boxRetry });
  if (!patched('plugin-reconcile-activities')) {
    // Runs started before per-step activities: the single legacy activity.
    const legacy = proxyActivities<Activities>({ startToCloseTimeout: config.reconcileTimeoutMs });
    await legacy.reconcilePlugins(request);
    return { declared: 0, outcomes: [] };
  }
  const staging = proxyActivities<Activities>({
    startToCloseTimeout: config.reconcileTimeoutMs, // fetching a repository can be slow
    retry: boxRetry,
  });

  const diff = await acts.listPluginDiff(request);
  const outcomes = await Promise.all(
    diff.missing.map((plugin) => reconcilePlugin(request.workspaceId, plugin, acts, staging)),
  );
  return { declared: diff.declared, outcomes };
}

async function reconcilePlugin(
  workspaceId: string,
  plugin: DeclaredPlugin,
  acts: Activities,
  staging: Activities,
): Promise<PluginOutcome> {
  const base = { workspaceId, pluginName: plugin.name, source: plugin.source };
  try {
    const probe = await acts.probePlugin({ workspaceId, pluginName: plugin.name });
    if (probe.presence === 'present') {
      await acts.recordInstalled({ ...base, revision: probe.revision, installedVia: 'boot' });
      return { name: plugin.name, status: 'installed', via: 'boot', revision: probe.revision };
    }
    const staged = await staging.stagePlugin({ workspaceId, pluginName: plugin.name, source: plugin.source });
    await acts.deliverPlugin({ workspaceId, plugin: staged });
    await acts.recordInstalled({ ...base, revision: staged.revision, installedVia: 'delivered' });
    return { name: plugin.name, status: 'installed', via: 'delivered', revision: staged.revision };
  } catch (err) {
    return { name: plugin.name, status: 'failed', error: failureMessage(err) };
  }
}

export function failureMessage(err: unknown): string {
  if (err instanceof ActivityFailure && err.cause instanceof ApplicationFailure) return err.cause.message;
  if (err instanceof ActivityFailure && err.cause instanceof Error) return err.cause.message;
  return err instanceof Error ? err.message : String(err);
}
