/** The worker process of bench/cache-memory.ts: runs the bench workflows and reports its memory. */
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { memoryAllocator } from '../worker.js';
import { idleBoxActivities } from './fixtures.js';

Runtime.install({ logger: new DefaultLogger('WARN') });
const connection = await NativeConnection.connect({ address: process.env['BENCH_ADDRESS'] ?? '' });
// Bundled as the worker bundles workflows/ (workflow-bundle.ts): the workflow modules preloaded.
const workflowsPath = fileURLToPath(new URL('./workflows.ts', import.meta.url));
const worker = await Worker.create({
  connection,
  taskQueue: process.env['BENCH_TASK_QUEUE'] ?? '',
  workflowsPath,
  bundlerOptions: { preloadModules: [workflowsPath] },
  activities: idleBoxActivities(),
  maxCachedWorkflows: Number(process.env['BENCH_CACHE']),
  // On the main thread, the workflows' heap is the process's own: the figures split it from native memory.
  debugMode: process.env['BENCH_SPLIT'] === '1',
});

function kb(text: string, field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  return Number(match?.[1] ?? 0);
}

process.on('message', (message) => {
  if (message !== 'sample') return;
  global.gc?.();
  const rollup = readFileSync('/proc/self/smaps_rollup', 'utf8');
  const cpu = process.cpuUsage();
  process.send?.({
    rssMb: kb(rollup, 'Rss') / 1024,
    heapMb: process.memoryUsage().heapUsed / 2 ** 20,
    // All of the process's threads: the workflow thread's work included.
    cpuMs: (cpu.user + cpu.system) / 1000,
    allocator: memoryAllocator() ?? 'an unknown allocator',
  });
});
void worker.run();
process.send?.('ready');
