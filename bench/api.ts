/**
 * Heartbeat load through the HTTP API (autocannon at fixed concurrency) beside direct SDK
 * signals to the same workflows at the same concurrency, in the same run, against the dev
 * server and PostgreSQL. The API records each heartbeat in the ledger and forwards those the
 * workflow wants (docs/heartbeats.md). Prints throughput, p50/p99 latency, their API/direct
 * ratios, and the memory at the end. Every heartbeat is then found counted, in the ledger (the
 * API's) or by its workflow (the direct signals).
 *
 * The API runs in a process of its own (`api/main.ts`), as it is deployed: the load generator
 * (autocannon) and the direct client both run in this process, and neither shares the API's
 * event loop.
 *
 *   npm run bench:api [-- --workspaces 20 --requests 2000 --concurrency 16]
 */
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import autocannon from 'autocannon';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Activities } from '../activities/index.js';
import { migrate } from '../db/migrate.js';
import { Store } from '../db/store.js';
import { buildService, distDir } from '../scripts/build.js';
import { freePort } from '../scripts/ports.js';
import { localDatabaseUrl } from '../scripts/postgres.js';
import { devServerEnvOptions } from '../scripts/toolchain.js';
import { heartbeatSignal, stateQuery, workspaceWorkflowId } from '../workflows/definitions.js';
import { idleHeartbeat } from '../workflows/payloads.js';
import { preloadModules, workflowInterceptorModules, workflowsPath } from '../workflow-bundle.js';
import { createWorkspaces } from './harness/load.js';
import { rssMb } from './harness/processes.js';
import { untilApiAnswers } from './harness/stack.js';
import { percentile } from './harness/stats.js';

const { values } = parseArgs({
  options: {
    workspaces: { type: 'string', default: '20' },
    requests: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '16' },
  },
});
const workspaceCount = Number(values.workspaces);
const requests = Number(values.requests);
const concurrency = Number(values.concurrency);

Runtime.install({ logger: new DefaultLogger('WARN') });
const databaseUrl = process.env['DATABASE_URL'] ?? localDatabaseUrl('workspace_lifecycle_bench');
await migrate(databaseUrl);
const store = Store.connect(databaseUrl);
console.log('bench: starting dev server...');
const env = await TestWorkflowEnvironment.createLocal(devServerEnvOptions());
const taskQueue = 'bench-api';
const activities: Partial<Activities> = {
  listPluginDiff: () => Promise.resolve({ declared: 0, declaredNames: [], missing: [], tracked: [], undeclared: [] }),
  writeProjection: async (projection) => {
    await store.workspaces.writeProjection(projection);
  },
  readHeartbeatLedger: ({ workspaceId, restartKey }) => store.heartbeats.reading(workspaceId, restartKey),
};
const worker = await Worker.create({
  connection: env.nativeConnection,
  taskQueue,
  workflowsPath,
  interceptors: { workflowModules: workflowInterceptorModules },
  bundlerOptions: { preloadModules },
  activities,
});
const adminToken = 'bench-admin-token-0123456789';

/** Starts the compiled API (dist/api/main.js) with `extra` on top of the bench's settings; resolves once it answers. */
async function startApiProcess(extra: Record<string, string> = {}): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  await buildService();
  const child = spawn(process.execPath, [join(distDir, 'api', 'main.js')], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: {
      ...process.env,
      TEMPORAL_ADDRESS: env.connection.options.address,
      TEMPORAL_TASK_QUEUE: taskQueue,
      DATABASE_URL: databaseUrl,
      WL_ADMIN_TOKEN: adminToken,
      WL_API_PORT: String(port),
      LOG_LEVEL: 'warn',
      ...extra,
    },
  });
  const url = `http://127.0.0.1:${port}`;
  await untilApiAnswers(url, Date.now() + 30_000, () => child.exitCode !== null);
  return { url, child };
}
const api = await startApiProcess();
const apiUrl = api.url;

interface Figures {
  name: string;
  perSecond: number;
  p50: number;
  p99: number;
}

const results = await worker.runUntil(async () => {
  const run = Date.now();
  const { runtimes: workspaces, failures } = await createWorkspaces({
    apiUrls: [apiUrl],
    adminToken,
    ids: Array.from({ length: workspaceCount }, (_, i) => `bench-api-${run}-${i}`),
    concurrency: workspaceCount,
    retryOn: [],
  });
  const [failed] = failures;
  if (failed !== undefined) throw new Error(`creating ${failed.id}: ${failed.status} ${JSON.stringify(failed.body)}`);

  // Through the API: HTTP, auth, validation, the ledger, a signal-with-start when forwarded.
  async function throughApi(name: string, url: string): Promise<Figures> {
    let next = 0;
    const result = await autocannon({
      url: `${url}/registry/heartbeat`,
      connections: concurrency,
      amount: requests,
      requests: [
        {
          method: 'POST',
          setupRequest: (request) => {
            const target = workspaces[next++ % workspaces.length];
            return {
              ...request,
              headers: { 'content-type': 'application/json', authorization: `Bearer ${target?.token ?? ''}` },
              body: JSON.stringify(idleHeartbeat(target?.id ?? '', 1)),
            };
          },
        },
      ],
    });
    if (result.non2xx > 0 || result.errors > 0)
      throw new Error(`${name} run had ${result.non2xx} non-2xx and ${result.errors} errors`);
    return {
      name,
      perSecond: result.requests.total / (result.duration || 1),
      p50: result.latency.p50,
      p99: result.latency.p99,
    };
  }
  const viaApi = await throughApi('api', apiUrl);

  // Direct: the SDK client signals the same workflows with the same concurrency.
  const handles = workspaces.map((w) => ({
    id: w.id,
    handle: env.client.workflow.getHandle(workspaceWorkflowId(w.id)),
  }));
  const latencies: number[] = [];
  let sent = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (sent < requests) {
        const target = handles[sent++ % handles.length];
        if (!target) continue;
        const start = performance.now();
        await target.handle.signal(heartbeatSignal, idleHeartbeat(target.id, 1));
        latencies.push(performance.now() - start);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const direct: Figures = {
    name: 'direct',
    perSecond: requests / seconds,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
  };

  // Every heartbeat arrived: each workspace counted its share of the two runs, the API's in the
  // ledger, the direct signals in its workflow.
  for (const { id, handle } of handles) {
    for (;;) {
      const { beats } = await store.heartbeats.read(id);
      const state = await handle.query(stateQuery);
      if (beats + state.counters.heartbeats >= (2 * requests) / workspaceCount - 1) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return { viaApi, direct };
});

const apiMemoryMb = [api].map(({ child }) => rssMb(child.pid));
for (const { child } of [api]) {
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  await exited;
}
await env.teardown();
await store.close();
const memory = process.memoryUsage();
const { viaApi, direct } = results;
console.log(`\n${workspaceCount} workspaces, ${requests} heartbeats per run, ${concurrency} in flight`);
console.log(`${'path'.padEnd(8)} ${'req/s'.padStart(9)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)}`);
for (const f of [viaApi, direct]) {
  console.log(
    `${f.name.padEnd(8)} ${f.perSecond.toFixed(1).padStart(9)} ${f.p50.toFixed(1).padStart(8)} ${f.p99.toFixed(1).padStart(8)}`,
  );
}
for (const f of [viaApi]) {
  console.log(
    `ratio ${f.name}/direct: throughput ${(f.perSecond / direct.perSecond).toFixed(2)}, p50 ${(f.p50 / direct.p50).toFixed(2)}, p99 ${(f.p99 / direct.p99).toFixed(2)}`,
  );
}
console.log(
  `memory at end: bench process (worker, load generator, direct client) rss ${(memory.rss / 2 ** 20).toFixed(0)} MiB, ` +
    `heap used ${(memory.heapUsed / 2 ** 20).toFixed(0)} MiB; API processes ${apiMemoryMb.map((mb) => `${mb.toFixed(0)} MiB`).join(', ')}`,
);
