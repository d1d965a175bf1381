/**
 * Drift: where a tracking row no longer says what is on the box (the box was rebuilt from its
 * image, or someone deleted or replaced a plugin's folder). Pure: compares the tracking rows
 * with one listing of the box.
 */
import type { ObservedPlugin, TrackedPlugin } from '../activities/reconcile.js';

export interface Drift {
  /** Gone from the box, or a delivered plugin at another revision there: deliver it again. */
  redeliver: TrackedPlugin[];
  /**
   * A plugin the box's image provides, found at another revision (the image changed): the box
   * is right, its row is brought up to date.
   */
  rerecord: { plugin: TrackedPlugin; revision: string }[];
}

export function findDrift(tracked: readonly TrackedPlugin[], observed: readonly ObservedPlugin[]): Drift {
  const onBox = new Map(observed.map((plugin) => [plugin.name, plugin.revision]));
  const drift: Drift = { redeliver: [], rerecord: [] };
  for (const plugin of tracked) {
    const revision = onBox.get(plugin.name);
    if (revision === undefined) drift.redeliver.push(plugin);
    else if (revision === plugin.revision) continue;
    else if (plugin.installedVia === 'boot') drift.rerecord.push({ plugin, revision });
    else drift.redeliver.push(plugin);
  }
  return drift;
}
