/**
 * The declared-plugin reconcile's steps (diff, probe, stage, deliver, record): thin, idempotent
 * adapters over the store, the plugin sources and the box driver. Permanent plugin problems
 * become non-retryable failures carrying a message a person can act on; everything else is
 * retried by the workflow's retry policy.
 */
import type { Client } from '@temporalio/client';
import { ApplicationFailure, log } from '@temporalio/activity';
import { createHash } from 'node:crypto';
import type { Store } from '../db/store.js';
import type { DeclaredPlugin } from '../db/tables/declared-plugins.js';
import type { TrackingRow } from '../db/tables/tracking-rows.js';
import type { InstalledVia, PluginChange, ReconcileMode } from '../workflows/state-machine.js';
import { isPermanentBoxError, type BoxDriver } from './box/driver.js';
import { heartbeating } from './heartbeating.js';
import { LifecycleMetrics } from './metrics.js';
import { isSafePluginName, PermanentPluginError } from './plugins/errors.js';
import { parsePluginSource, type SourceSettings } from './plugins/source.js';
import { parseManifest, stagePlugin as stage, type StagedPlugin, type StageSettings } from './plugins/stage.js';

/** What every activity works with; the worker builds it once. */
export interface ActivityDeps {
  store: Store;
  driver: BoxDriver;
  sources: SourceSettings & StageSettings;
  /** The domain counters (activities/metrics.ts); none counted without. */
  metrics?: LifecycleMetrics;
  /** The Temporal client the fleet liveness controller signals workspaces with (the worker's). */
  temporal?: Client;
}

export interface PluginDiff {
  declared: number;
  /** The declared plugins' names: what a workflow keeps per-plugin state for. */
  declaredNames: string[];
  /** Declared plugins without a tracking row, in name order. */
  missing: DeclaredPlugin[];
  /** Declared plugins with a tracking row: what a verify or refresh pass checks. */
  tracked: TrackedPlugin[];
  /** Tracking rows of plugins no longer declared: to remove from the box. */
  undeclared: TrackedPlugin[];
}

/** A tracking row as a reconcile pass works with it (its source is the declared one when declared). */
export interface TrackedPlugin {
  name: string;
  source: string;
  revision: string;
  installedVia: InstalledVia;
}

/** A plugin as found on the box: the revision its delivery recorded, or its manifest's. */
export interface ObservedPlugin {
  name: string;
  revision: string;
}

export type Probe =
  | { presence: 'present'; revision: string }
  | { presence: 'absent' }
  /**
   * The box could not say (unreachable, unreadable or empty manifest): treated as absent. A
   * permanent box error (host key mismatch, key refused) is not uncertain: the probe fails with it.
   */
  | { presence: 'uncertain'; detail: string };

export function createReconcileActivities(deps: ActivityDeps) {
  const { store, driver, sources } = deps;
  const metrics = deps.metrics ?? new LifecycleMetrics();

  async function permanentAsFailure<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      if (err instanceof PermanentPluginError) {
        throw ApplicationFailure.create({ message: err.message, type: 'PermanentPluginError', nonRetryable: true });
      }
      throw err;
    }
  }

  return {
    /**
     * Declared minus tracked: the only query a reconcile with nothing to do makes. Every pass
     * starts here, so passes are counted here (by `mode`; absent from runs of an earlier build).
     */
    async listPluginDiff({
      workspaceId,
      trigger,
      mode,
    }: {
      workspaceId: string;
      trigger: string;
      mode?: ReconcileMode;
    }): Promise<PluginDiff> {
      log.info('reconcile pass', { workspaceId, trigger, mode });
      const [declared, tracked] = await Promise.all([
        store.declaredPlugins.list(workspaceId),
        store.trackingRows.list(workspaceId),
      ]);
      const rows = new Map(tracked.map((row) => [row.pluginName, row]));
      const declaredNames = new Set(declared.map((plugin) => plugin.name));
      const asTracked = (row: TrackingRow, source: string): TrackedPlugin => ({
        name: row.pluginName,
        source,
        revision: row.revision,
        installedVia: row.installedVia,
      });
      metrics.reconcileStarted(mode ?? 'diff');
      return {
        declared: declared.length,
        declaredNames: declared.map((plugin) => plugin.name),
        missing: declared.filter((plugin) => !rows.has(plugin.name)),
        tracked: declared.flatMap((plugin) => {
          const row = rows.get(plugin.name);
          return row === undefined ? [] : [asTracked(row, plugin.source)];
        }),
        undeclared: tracked
          .filter((row) => !declaredNames.has(row.pluginName))
          .map((row) => asTracked(row, row.source)),
      };
    },

    /**
     * Every plugin on the box in one listing, each with the revision to compare with its tracking
     * row. A folder whose name no declared plugin can have is none of ours, and is left out.
     */
    async listBoxPlugins({ workspaceId }: { workspaceId: string }): Promise<ObservedPlugin[]> {
      const plugins = await driver.listPlugins(workspaceId);
      return plugins.flatMap((plugin) => {
        if (!isSafePluginName(plugin.name)) return [];
        const recorded = plugin.revision?.trim();
        const revision = recorded ? boxRevision(recorded) : manifestRevision(plugin.manifest, plugin.name);
        return revision === null ? [] : [{ name: plugin.name, revision }];
      });
    },

    /** Probe before fetch: a boot-installed plugin costs no clone and no delivery. */
    async probePlugin({ workspaceId, pluginName }: { workspaceId: string; pluginName: string }): Promise<Probe> {
      let text: string | null;
      try {
        text = await driver.readPluginManifest(workspaceId, pluginName);
      } catch (err) {
        // A box that cannot be read is delivered to; one a person must fix (host key changed,
        // key refused) fails the plugin at once with the fix, as every later step would.
        if (isPermanentBoxError(err)) throw err;
        return { presence: 'uncertain', detail: `probe failed: ${err instanceof Error ? err.message : String(err)}` };
      }
      if (text === null) return { presence: 'absent' };
      const revision = manifestRevision(text, pluginName);
      if (revision === null) return { presence: 'uncertain', detail: 'manifest on the box is empty or unreadable' };
      return { presence: 'present', revision };
    },

    async stagePlugin({
      workspaceId,
      pluginName,
      source,
    }: {
      workspaceId: string;
      pluginName: string;
      source: string;
    }): Promise<StagedPlugin> {
      return permanentAsFailure(async () => {
        const parsed = parsePluginSource(source, sources);
        if (parsed.name !== pluginName) {
          throw new PermanentPluginError(
            `declared plugin ${JSON.stringify(pluginName)} has source ${source}, which names the plugin ${JSON.stringify(parsed.name)}`,
          );
        }
        const staged = await heartbeating(() => stage(parsed, sources));
        log.info('staged plugin', { workspaceId, pluginName, revision: staged.revision });
        return staged;
      });
    },

    /** `change`: set when a tracked plugin is delivered again (drift, a newer revision). */
    async deliverPlugin({
      workspaceId,
      plugin,
      change,
    }: {
      workspaceId: string;
      plugin: StagedPlugin;
      change?: PluginChange;
    }): Promise<string> {
      // A staged tree the driver refuses (one that holds a link) will not change by retrying.
      const result = await permanentAsFailure(() => heartbeating(() => driver.deliverPlugin(workspaceId, plugin)));
      log.info('deliver plugin', { workspaceId, pluginName: plugin.pluginName, revision: plugin.revision, result });
      metrics.delivered(change ?? 'missing');
      return result;
    },

    /** `change: 'repaired'`: the row completes a drift repair, which is counted here. */
    async recordInstalled(row: TrackingRow & { change?: PluginChange }): Promise<void> {
      await store.trackingRows.record(row);
      if (row.change === 'repaired') metrics.repaired(row.installedVia);
    },

    /** Takes a plugin no longer declared off the box, whole; already gone is done. */
    async removePlugin({ workspaceId, pluginName }: { workspaceId: string; pluginName: string }): Promise<string> {
      const result = await heartbeating(() => driver.removePlugin(workspaceId, pluginName));
      log.info('remove plugin', { workspaceId, pluginName, result });
      metrics.removed();
      return result;
    },

    /**
     * Deletes a removed plugin's tracking row: the row says what is on the box. A plugin declared
     * again meanwhile is then missing, and the pass its declaration asked for delivers it.
     */
    async deleteTrackingRow({ workspaceId, pluginName }: { workspaceId: string; pluginName: string }): Promise<void> {
      await store.trackingRows.delete(workspaceId, pluginName);
    },
  };
}

/**
 * A manifest's revision when no delivery recorded one (a plugin baked into the box's image):
 * its version, else the hash of its text; null for a manifest that does not name the plugin.
 */
function manifestRevision(text: string, pluginName: string): string | null {
  const manifest = parseManifest(text);
  if (manifest?.name !== pluginName) return null;
  return manifest.version === null ? `manifest-sha256:${sha256(text)}` : boxRevision(`version:${manifest.version}`);
}

/** A revision kept as the box reports it: a commit, `version:1.2.3+build`, `manifest-sha256:…`. */
const SAFE_REVISION = /^[A-Za-z0-9][A-Za-z0-9._:+~-]{0,127}$/;

/**
 * A revision as the box reports it (the `.revision` file a delivery wrote, or the version in its
 * manifest), made fit to keep: it is stored in PostgreSQL (tracking rows), held in the
 * workflow's state and shown in the Web UI, and the box or the plugin's author wrote it. A safe
 * token is kept as it is; anything else (NUL, which PostgreSQL cannot store; markup; a megabyte
 * of text) becomes `text-sha256:<its hash>`, which still compares equal exactly when the text does.
 */
export function boxRevision(text: string): string {
  return SAFE_REVISION.test(text) ? text : `text-sha256:${sha256(text)}`;
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
