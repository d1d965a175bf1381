/**
 * Records the release's workspace workflow history for the replay test: a full lifecycle on the
 * time-skipping test server (register, a reconcile that delivers, removes and restarts, register
 * again with drift repaired, degraded and back, an invalid payload, an expired lease as the fleet
 * liveness controller signals it, with the watchdog's evaluation, recovery, an operator restart, a
 * dispatchFailed evaluation while settling, a refresh that upgrades, a caller's dead verdict the
 * fleet's budget grants, deprovision).
 *
 *   npm run record-history [-- name]   → test/histories/<name>.json (default: release-<package version>)
 *
 * One history per release (docs/versioning.md): runs are pinned to the build that started them,
 * so the workflow code replays only what its own release recorded.
 */
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import { Worker } from '@temporalio/worker';
import { readFileSync, writeFileSync } from 'node:fs';
import { defaultLifecycleConfig } from '../workflows/config.js';
import {
  deprovisionSignal,
  dispatchFailedUpdate,
  heartbeatSignal,
  leaseExpiredSignal,
  registerSignal,
  reconcileSignal,
  restartSignal,
  stateQuery,
  workspaceWorkflowId,
} from '../workflows/definitions.js';
import { createTimeSkippingEnv } from '../test/helpers/env.js';
import { heartbeatPayload, registerPayload } from '../test/helpers/payloads.js';
import { preloadModules, workflowInterceptorModules, workflowsPath } from '../workflow-bundle.js';
import type { Activities } from '../activities/index.js';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};
const name = process.argv[2] ?? `release-${version}`;
const env = await createTimeSkippingEnv();
const taskQueue = 'record-history';
// Activities that behave like a box missing one plugin until it is delivered, so the history
// covers probe, stage, deliver, record and the restart that follows; a tracked plugin no longer
// declared (removed), a box that lost the delivered plugin once (drift repaired by the verify
// pass of the register after the restart), and a refresh that finds a newer revision.
let delivered = false;
let removed = false;
let stages = 0;
let listings = 0;
const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const revisionOf = (stage: number): string => (stage <= 2 ? 'sha256:abc' : 'sha256:def');
const fakeActivities: Activities = {
  listPluginDiff: async () => {
    await pause(50); // long enough for a trigger to coalesce
    const seo = { name: 'seo', source: 'local://seo' };
    const retired = {
      name: 'retired',
      source: 'local://retired',
      revision: 'sha256:old',
      installedVia: 'delivered' as const,
    };
    return {
      declared: 1,
      declaredNames: ['seo'],
      missing: delivered ? [] : [seo],
      tracked: delivered ? [{ ...seo, revision: revisionOf(stages), installedVia: 'delivered' as const }] : [],
      undeclared: removed ? [] : [retired],
    };
  },
  listBoxPlugins: () => {
    listings++;
    return Promise.resolve(listings === 1 ? [] : [{ name: 'seo', revision: revisionOf(stages) }]);
  },
  removePlugin: () => Promise.resolve('removed'),
  deleteTrackingRow: () => {
    removed = true;
    return Promise.resolve();
  },
  probePlugin: () => Promise.resolve({ presence: 'absent' as const }),
  stagePlugin: () => {
    stages++;
    return Promise.resolve({ pluginName: 'seo', revision: revisionOf(stages), path: '/staged/seo' });
  },
  deliverPlugin: () => {
    delivered = true;
    return Promise.resolve('delivered');
  },
  recordInstalled: () => Promise.resolve(),
  restartBox: () => Promise.resolve('restarted'),
  stopBox: () => Promise.resolve('stopped'),
  writeProjection: () => Promise.resolve(),
  isBoxRunning: () => Promise.resolve(false),
  revokeInstanceTokens: () => Promise.resolve(0),
  readHeartbeatLedger: () => Promise.resolve({ lastSeenAgeMs: null, seenSinceRestart: false, activeTasks: 0 }),
  findExpiredLeases: () =>
    Promise.resolve({
      now: new Date(0).toISOString(),
      watched: 0,
      maxTtlMs: 0,
      servedAgeMs: null,
      expired: 0,
      leases: [],
    }),
  signalExpiredLeases: () => Promise.resolve({ signalled: 0, gone: 0, failed: 0 }),
  grantRemediation: () => Promise.resolve({ granted: true }),
};
const worker = await Worker.create({
  connection: env.nativeConnection,
  taskQueue,
  workflowsPath,
  interceptors: { workflowModules: workflowInterceptorModules },
  bundlerOptions: { preloadModules },
  activities: fakeActivities,
});

const id = 'recorded-workspace';
const handle = await env.client.workflow.start('workspaceWorkflow', {
  taskQueue,
  workflowId: workspaceWorkflowId(id),
  args: [{ workspaceId: id }],
});
await worker.runUntil(async () => {
  await handle.signal(registerSignal, registerPayload(id));
  await env.sleep(2_000); // reconcile delivers, the box restarts, the runtime registers again
  await handle.signal(registerSignal, registerPayload(id));
  await handle.signal(heartbeatSignal, heartbeatPayload(id, { error_rate: 0.8 })); // degraded
  await handle.signal(heartbeatSignal, heartbeatPayload(id)); // recovery, coalesces with the first pass
  await handle.signal(heartbeatSignal, { workspace_id: id, error_rate: 'bad' }); // rejected
  await env.sleep(2_000); // the verify pass repairs the drift: delivered again, the box restarts
  await handle.signal(registerSignal, registerPayload(id)); // online again, its lease watched
  await env.sleep(defaultLifecycleConfig.livenessTtlMs + 1_000);
  const { livenessContract } = await handle.query(stateQuery);
  await handle.signal(leaseExpiredSignal, {
    version: livenessContract?.version ?? 0,
    silentForMs: defaultLifecycleConfig.livenessTtlMs + 1_000,
  }); // the fleet liveness controller found the lease expired: offline, the watchdog's evaluation
  await handle.signal(heartbeatSignal, heartbeatPayload(id)); // offline → online
  await handle.signal(heartbeatSignal, heartbeatPayload(id, { error_rate: 0.05 }));
  await env.sleep(5_000);
  await handle.signal(restartSignal, { reason: 'config changed' }); // operator restart, settle window
  await env.sleep(1_000); // the restart done: the box settles
  const update = await handle.startUpdate(dispatchFailedUpdate, {
    args: [{ caller: 'recorder' }],
    waitForStage: 'ACCEPTED',
  });
  await env.sleep(5_000); // fresh-heartbeat wait and re-probe while settling: queued, the runtime beat recently
  await update.result();
  await env.sleep(60_000);
  await handle.signal(registerSignal, registerPayload(id));
  await handle.signal(reconcileSignal, { refresh: true }); // a newer revision: delivered, one restart
  await env.sleep(35_000); // past the settle window, no recent heartbeat
  const dead = await handle.startUpdate(dispatchFailedUpdate, {
    args: [{ caller: 'recorder' }],
    waitForStage: 'ACCEPTED',
  });
  await env.sleep(2_000);
  await dead.result(); // a caller's dead verdict: granted by the fleet's budget, tokens revoked, restarted
  await env.sleep(5_000);
  await handle.signal(deprovisionSignal);
  await handle.result();
});
const history = await handle.fetchHistory();
const path = new URL(`../test/histories/${name}.json`, import.meta.url);
writeFileSync(path, historyToJSON(history));
console.log(`record-history: ${history.events?.length ?? 0} events → ${path.pathname}`);
await env.teardown();
