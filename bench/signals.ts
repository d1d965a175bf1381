/**
 * Signal throughput and history cost of the workspace workflow against a baseline workflow
 * that only counts signals, measured in the same run on the same dev server.
 *
 *   npm run bench:signals [-- --workflows 20 --heartbeats 1500 --concurrency 16]
 *
 * Prints, for each: heartbeats/s (send to fully processed), history events per heartbeat,
 * timers and activities per heartbeat; then the workspace/baseline ratios.
 */
import type { WorkflowHandle } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { devServerEnvOptions } from '../scripts/toolchain.js';
import { heartbeatSignal, registerSignal, stateQuery } from '../workflows/definitions.js';
import { idleHeartbeat } from '../workflows/payloads.js';
import { idleBoxActivities } from './fixtures.js';
import { signalCountQuery } from './workflows.js';

const { values } = parseArgs({
  options: {
    workflows: { type: 'string', default: '20' },
    heartbeats: { type: 'string', default: '1500' },
    concurrency: { type: 'string', default: '16' },
  },
});
const workflowCount = Number(values.workflows);
const heartbeats = Number(values.heartbeats);
const concurrency = Number(values.concurrency);

interface Figures {
  name: string;
  perSecond: number;
  eventsPerHeartbeat: number;
  timersPerHeartbeat: number;
  activitiesPerHeartbeat: number;
}

Runtime.install({ logger: new DefaultLogger('WARN') });
console.log('bench: starting dev server...');
const env = await TestWorkflowEnvironment.createLocal(devServerEnvOptions());
const taskQueue = 'bench-signals';
const worker = await Worker.create({
  connection: env.nativeConnection,
  taskQueue,
  workflowsPath: fileURLToPath(new URL('./workflows.ts', import.meta.url)),
  activities: idleBoxActivities(),
});

/** Sends `heartbeats` signals spread over the handles with `concurrency` in flight. */
async function send(handles: { id: string; handle: WorkflowHandle }[]): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < heartbeats) {
        const i = next++;
        const target = handles[i % handles.length];
        if (target) await target.handle.signal(heartbeatSignal, idleHeartbeat(target.id, i));
      }
    }),
  );
}

async function historyCounts(handle: WorkflowHandle): Promise<{ events: number; timers: number; activities: number }> {
  const events = (await handle.fetchHistory()).events ?? [];
  return {
    events: events.length,
    timers: events.filter((e) => e.timerStartedEventAttributes).length,
    activities: events.filter((e) => e.activityTaskScheduledEventAttributes).length,
  };
}

async function measure(
  name: string,
  start: (id: string) => Promise<WorkflowHandle>,
  processed: (handle: WorkflowHandle) => Promise<number>,
): Promise<Figures> {
  const handles = await Promise.all(
    Array.from({ length: workflowCount }, async (_, i) => {
      const id = `${name}-${i}`;
      return { id, handle: await start(id) };
    }),
  );
  const before = await Promise.all(handles.map(({ handle }) => historyCounts(handle)));
  const perWorkflow = heartbeats / workflowCount;
  const t0 = performance.now();
  await send(handles);
  for (const { handle } of handles) {
    while ((await processed(handle)) < perWorkflow) await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const seconds = (performance.now() - t0) / 1000;
  const after = await Promise.all(handles.map(({ handle }) => historyCounts(handle)));
  const delta = (key: 'events' | 'timers' | 'activities'): number =>
    after.reduce((sum, counts, i) => sum + counts[key] - (before[i]?.[key] ?? 0), 0) / heartbeats;
  const figures = {
    name,
    perSecond: heartbeats / seconds,
    eventsPerHeartbeat: delta('events'),
    timersPerHeartbeat: delta('timers'),
    activitiesPerHeartbeat: delta('activities'),
  };
  console.log(`bench: ${name}: ${heartbeats} heartbeats in ${seconds.toFixed(2)} s`);
  return figures;
}

const results = await worker.runUntil(async () => {
  const client = env.client.workflow;
  // A discarded round first: whichever runs first on a cold server would otherwise look slower.
  await measure(
    'warmup',
    (id) => client.start('countSignalsWorkflow', { taskQueue, workflowId: `bench-warmup:${id}` }),
    (handle) => handle.query(signalCountQuery),
  );
  const baseline = await measure(
    'baseline',
    (id) => client.start('countSignalsWorkflow', { taskQueue, workflowId: `bench-baseline:${id}` }),
    (handle) => handle.query(signalCountQuery),
  );
  const workspace = await measure(
    'workspace',
    async (id) => {
      // Online before measuring, so the one boot reconcile is not charged to heartbeats; a
      // budget above the run's signals keeps continue-as-new out of the history count.
      const handle = await client.start('workspaceWorkflow', {
        taskQueue,
        workflowId: `bench-workspace:${id}`,
        args: [{ workspaceId: id, config: { maxSignalsPerRun: heartbeats + 10 } }],
      });
      await handle.signal(registerSignal, { id, url: 'http://127.0.0.1:9000', agent_card: { name: id } });
      while (
        (await handle.query(stateQuery)).reconcile.running ||
        (await handle.query(stateQuery)).status !== 'online'
      ) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return handle;
    },
    async (handle) => (await handle.query(stateQuery)).counters.heartbeats,
  );
  return { baseline, workspace };
});
await env.teardown();

const { baseline, workspace } = results;
const row = (f: Figures): string =>
  `${f.name.padEnd(10)} ${f.perSecond.toFixed(1).padStart(12)} ${f.eventsPerHeartbeat.toFixed(2).padStart(14)} ${f.timersPerHeartbeat.toFixed(3).padStart(10)} ${f.activitiesPerHeartbeat.toFixed(3).padStart(12)}`;
console.log(`\n${workflowCount} workflows, ${heartbeats} heartbeats, ${concurrency} in flight`);
console.log(
  `${'workflow'.padEnd(10)} ${'heartbeats/s'.padStart(12)} ${'events/beat'.padStart(14)} ${'timers/beat'.padStart(10)} ${'acts/beat'.padStart(12)}`,
);
console.log(row(baseline));
console.log(row(workspace));
console.log(
  `ratio workspace/baseline: throughput ${(workspace.perSecond / baseline.perSecond).toFixed(2)}, events per heartbeat ${(workspace.eventsPerHeartbeat / baseline.eventsPerHeartbeat).toFixed(2)}`,
);
