/** What the signal and memory benchmarks share: the activities of an idle box and a heartbeat payload. */
import type { Activities } from '../activities/index.js';

/** Heartbeats never run activities; the one boot reconcile finds nothing missing, its projection write succeeds. */
export function idleBoxActivities(): Partial<Activities> {
  return {
    listPluginDiff: () => Promise.resolve({ declared: 0, declaredNames: [], missing: [], tracked: [], undeclared: [] }),
    writeProjection: () => Promise.resolve(),
    readHeartbeatLedger: () => Promise.resolve({ lastSeenAgeMs: null, seenSinceRestart: false }),
  };
}

/** A healthy runtime's heartbeat, its uptime `i`. */
export function heartbeatPayload(id: string, i: number): Record<string, unknown> {
  return { workspace_id: id, error_rate: 0, sample_error: '', active_tasks: 0, current_task: '', uptime_seconds: i };
}
