/**
 * What one cached workflow costs the worker's memory: caches N no-op workflows that only count
 * signals and, in the same run, N workspace workflows (registered, online, a few heartbeats
 * each), each kind in a fresh worker process, and prints the worker's resident memory per cached
 * workflow for each, the worker's CPU time per workflow, and their ratio.
 *
 *   npm run bench:cache-memory [-- --workflows 2000 --split]
 *
 * The worker is a child process of its own (bench/cache-memory-worker.ts), so the dev server and
 * this client are not counted; it reports its resident set from /proc, and which allocator it
 * runs on. `--split` runs the workflows on the worker's main thread, so its live heap (after a
 * collection) is the workflows' JS heap and the rest of the growth is native memory.
 */
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { devServerEnvOptions } from '../scripts/toolchain.js';
import { heartbeatSignal, registerSignal, stateQuery } from '../workflows/definitions.js';
import { idleHeartbeat } from '../workflows/payloads.js';
import { signalCountQuery } from './workflows.js';

const { values } = parseArgs({
  options: {
    workflows: { type: 'string', default: '2000' },
    split: { type: 'boolean', default: false },
  },
});
const count = Number(values.workflows);
const kinds = ['noop', 'workspace'] as const;
const taskQueue = 'bench-cache-memory';

Runtime.install({ logger: new DefaultLogger('WARN') });
console.log('bench: starting dev server...');
const env = await TestWorkflowEnvironment.createLocal(devServerEnvOptions());
const address = env.connection.options.address;
const client = new Client({ connection: await Connection.connect({ address }) });

interface Sample {
  rssMb: number;
  /** The worker's main thread's live heap (the workflows' too with --split). */
  heapMb: number;
  /** CPU time the worker process has used, all threads. */
  cpuMs: number;
  allocator: string;
}

/** Starts a worker process; returns a function that asks it for its memory. */
async function startWorker(): Promise<{ child: ChildProcess; sample: () => Promise<Sample> }> {
  const child = fork(fileURLToPath(new URL('./cache-memory-worker.ts', import.meta.url)), [], {
    execArgv: ['--import', 'tsx', '--expose-gc'],
    env: {
      ...process.env,
      BENCH_ADDRESS: address,
      BENCH_TASK_QUEUE: taskQueue,
      BENCH_CACHE: String(count + 100),
      BENCH_SPLIT: values.split ? '1' : '0',
    },
  });
  const [ready] = (await once(child, 'message')) as [string];
  if (ready !== 'ready') throw new Error(`worker said ${ready}`);
  const sample = async (): Promise<Sample> => {
    child.send('sample');
    const [reply] = (await once(child, 'message')) as [Sample];
    return reply;
  };
  return { child, sample };
}

async function inBatches<T>(n: number, width: number, each: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await each(i);
      }
    }),
  );
  return out;
}

async function cache(kind: (typeof kinds)[number]): Promise<void> {
  const run = `${kind}-${Date.now()}`;
  const handles: WorkflowHandle[] = await inBatches(count, 32, async (i) => {
    const id = `${run}-${i}`;
    if (kind === 'noop') {
      const handle = await client.workflow.start('countSignalsWorkflow', { taskQueue, workflowId: id });
      for (let b = 0; b < 3; b++) await handle.signal(heartbeatSignal, idleHeartbeat(id, b));
      return handle;
    }
    const handle = await client.workflow.start('workspaceWorkflow', {
      taskQueue,
      workflowId: id,
      args: [{ workspaceId: id }],
    });
    await handle.signal(registerSignal, { id, url: 'http://127.0.0.1:9000', agent_card: { name: id } });
    for (let b = 0; b < 3; b++) await handle.signal(heartbeatSignal, idleHeartbeat(id, b));
    return handle;
  });
  // Every workflow has run its tasks once each answers its query with all its heartbeats seen.
  const deadline = Date.now() + 300_000;
  let behind = handles;
  while (behind.length > 0 && Date.now() < deadline) {
    const seen = await inBatches(behind.length, 32, async (i) => {
      const handle = behind[i] as WorkflowHandle;
      return kind === 'noop'
        ? (await handle.query(signalCountQuery)) >= 3
        : (await handle.query(stateQuery)).counters.heartbeats >= 3;
    });
    behind = behind.filter((_, i) => !seen[i]);
    if (behind.length > 0) await sleep(1000);
  }
  if (behind.length > 0) console.log(`bench: ${behind.length} ${kind} workflows had not seen their heartbeats`);
}

const perWorkflowKb: Partial<Record<(typeof kinds)[number], number>> = {};
for (const kind of kinds) {
  const { child, sample } = await startWorker();
  await sleep(2000);
  const before = await sample();
  const t0 = performance.now();
  await cache(kind);
  await sleep(5000);
  const after = await sample();
  const each = (mb: number): number => (mb * 1024) / count;
  perWorkflowKb[kind] = each(after.rssMb - before.rssMb);
  console.log(
    `${kind.padEnd(10)} ${count} cached in ${((performance.now() - t0) / 1000).toFixed(1)} s on ${after.allocator}: ` +
      `RSS ${before.rssMb.toFixed(0)} -> ${after.rssMb.toFixed(0)} MB (${each(after.rssMb - before.rssMb).toFixed(0)} KB each), ` +
      `worker CPU ${((after.cpuMs - before.cpuMs) / count).toFixed(1)} ms each` +
      (values.split
        ? `, of it JS heap ${before.heapMb.toFixed(0)} -> ${after.heapMb.toFixed(0)} MB (${each(after.heapMb - before.heapMb).toFixed(0)} KB each)`
        : ''),
  );
  child.kill('SIGKILL');
}
await env.teardown();
const { noop, workspace } = perWorkflowKb;
if (noop !== undefined && workspace !== undefined)
  console.log(`ratio workspace/no-op: ${(workspace / noop).toFixed(2)} of the memory per cached workflow`);
process.exit(0);
