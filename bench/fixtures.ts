/** What the signal and memory benchmarks share: the activities of an idle box. */
import type { Activities } from '../activities/index.js';

/** Heartbeats never run activities; the one boot reconcile finds nothing missing, its projection write succeeds. */
export function idleBoxActivities(): Partial<Activities> {
  return {
    listPluginDiff: () => Promise.resolve({ declared: 0, declaredNames: [], missing: [], tracked: [], undeclared: [] }),
    writeProjection: () => Promise.resolve(),
    readHeartbeatLedger: () => Promise.resolve({ lastSeenAgeMs: null, seenSinceRestart: false, activeTasks: 0 }),
  };
}
