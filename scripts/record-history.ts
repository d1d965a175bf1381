/**
 * Records a workspace workflow history for the replay test: a full lifecycle on the
 * time-skipping test server (register, heartbeats, degraded and back, liveness expiry,
 * recovery, an invalid payload, a coalesced reconcile, deprovision).
 *
 *   npm run record-history [-- name]   → test/histories/<name>.json (default: lifecycle-v<date>)
 *
 * Keep old histories: each one pins the behaviour of the workflows that may still be running.
 */
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import { Worker } from '@temporalio/worker';
import { writeFileSync } from 'node:fs';
import { defaultLifecycleConfig } from '../workflows/config.js';
import { deprovisionSignal, heartbeatSignal, registerSignal, workspaceWorkflowId } from '../workflows/definitions.js';
import { createTimeSkippingEnv } from '../test/helpers/env.js';
import { heartbeatPayload, registerPayload } from '../test/helpers/payloads.js';
import { workflowsPath } from '../test/helpers/bundle.js';
import type * as activities from '../activities/index.js';

const name = process.argv[2] ?? `lifecycle-v${new Date().toISOString().slice(0, 10)}`;
const env = await createTimeSkippingEnv();
const taskQueue = 'record-history';
const fakeActivities: typeof activities = {
  reconcilePlugins: async (request) => {
    await new Promise((resolve) => setTimeout(resolve, 50)); // long enough for a trigger to coalesce
    return { workspaceId: request.workspaceId, declared: 0, installed: 0 };
  },
};
const worker = await Worker.create({
  connection: env.nativeConnection,
  taskQueue,
  workflowsPath,
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
  await handle.signal(heartbeatSignal, heartbeatPayload(id, { error_rate: 0.8 })); // degraded
  await handle.signal(heartbeatSignal, heartbeatPayload(id)); // recovery, coalesces with the first pass
  await handle.signal(heartbeatSignal, { workspace_id: id, error_rate: 'bad' }); // rejected
  await env.sleep(defaultLifecycleConfig.livenessTtlMs + 1_000); // offline
  await handle.signal(heartbeatSignal, heartbeatPayload(id)); // offline → online
  await env.sleep(5_000);
  await handle.signal(deprovisionSignal);
  await handle.result();
});
const history = await handle.fetchHistory();
const path = new URL(`../test/histories/${name}.json`, import.meta.url);
writeFileSync(path, historyToJSON(history));
console.log(`record-history: ${history.events?.length ?? 0} events → ${path.pathname}`);
await env.teardown();
