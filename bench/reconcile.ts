/**
 * Reconcile of N declared plugins on the local box driver, against the dev server and real
 * PostgreSQL, in three shapes, beside a baseline measured in the same run:
 *   delivered   every plugin missing from the box: stage, deliver, record, one restart
 *   boot        every plugin already on the box: probe and record only, no fetch
 *   converged   a second pass with nothing missing: one query
 *   baseline    what the reference paid per online transition: `git clone --depth=1` of each plugin
 *
 *   npm run bench:reconcile [-- --plugins 20]
 */
import type { WorkflowHandle } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createActivities } from '../activities/index.js';
import { LocalBoxDriver } from '../activities/box/local.js';
import { migrate } from '../db/migrate.js';
import { Store } from '../db/store.js';
import { devServerEnvOptions } from '../scripts/toolchain.js';
import { localDatabaseUrl } from '../scripts/postgres.js';
import { createPluginRepo, localSourceSettings } from '../test/helpers/git.js';
import { registerSignal, stateQuery, workspaceWorkflowId } from '../workflows/definitions.js';
import type { WorkspaceState } from '../workflows/state-machine.js';
import { preloadModules, workflowsPath } from '../workflow-bundle.js';

const { values } = parseArgs({ options: { plugins: { type: 'string', default: '20' } } });
const count = Number(values.plugins);
const root = mkdtempSync(join(tmpdir(), 'wl-bench-reconcile-'));
const repos = join(root, 'repos');
const names = Array.from({ length: count }, (_, i) => `plugin-${String(i).padStart(2, '0')}`);
console.log(`bench: creating ${count} plugin repositories...`);
names.forEach((name) => createPluginRepo(repos, 'bench', name));
const declared = names.map((name) => ({ name, source: `gitea://bench/${name}#main` }));

Runtime.install({ logger: new DefaultLogger('WARN') });
const databaseUrl = process.env['DATABASE_URL'] ?? localDatabaseUrl('workspace_lifecycle_bench');
await migrate(databaseUrl);
const store = Store.connect(databaseUrl);
const driver = new LocalBoxDriver({ root: join(root, 'boxes'), runtimeCommand: null });
console.log('bench: starting dev server...');
const env = await TestWorkflowEnvironment.createLocal(devServerEnvOptions());
const taskQueue = 'bench-reconcile';
const worker = await Worker.create({
  connection: env.nativeConnection,
  taskQueue,
  workflowsPath,
  bundlerOptions: { preloadModules },
  activities: createActivities({
    store,
    driver,
    sources: localSourceSettings(root, 100 * 1024 * 1024),
  }),
});

interface Row {
  shape: string;
  seconds: number;
  activities: number;
  restarts: number;
}

async function until(handle: WorkflowHandle, done: (s: WorkspaceState) => boolean): Promise<WorkspaceState> {
  for (;;) {
    const state = await handle.query(stateQuery);
    if (done(state)) return state;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The pass's activities, local ones (the diff) included, without the projection writes. */
async function activitiesIn(handle: WorkflowHandle): Promise<number> {
  const events = (await handle.fetchHistory()).events ?? [];
  return events.filter((e) => {
    const marker = e.markerRecordedEventAttributes;
    const type =
      marker?.markerName === 'core_local_activity'
        ? (
            JSON.parse(Buffer.from(marker.details?.['data']?.payloads?.[0]?.data ?? []).toString() || '{}') as {
              activity_type?: string;
            }
          ).activity_type
        : e.activityTaskScheduledEventAttributes?.activityType?.name;
    return type !== undefined && type !== null && type !== 'writeProjection';
  }).length;
}

/** One workspace, registered once; measures until its first reconcile (and restart) settle. */
async function pass(
  shape: string,
  prepare: (boxDir: string) => void,
): Promise<{ row: Row; handle: WorkflowHandle; id: string }> {
  const id = `bench-${shape}-${Date.now()}`;
  await store.declaredPlugins.set(id, declared);
  prepare(await driver.createBox(id));
  const t0 = performance.now();
  const handle = await env.client.workflow.start('workspaceWorkflow', {
    taskQueue,
    workflowId: workspaceWorkflowId(id),
    args: [{ workspaceId: id }],
  });
  await handle.signal(registerSignal, { id, url: 'http://127.0.0.1:9000', agent_card: { name: id } });
  const state = await until(
    handle,
    (s) => s.counters.reconcilesStarted === 1 && !s.reconcile.running && !s.restart.inFlight,
  );
  const seconds = (performance.now() - t0) / 1000;
  if (state.pluginsPending !== 0)
    throw new Error(`${shape}: ${state.pluginsPending} plugins pending: ${JSON.stringify(state.plugins)}`);
  return { row: { shape, seconds, activities: await activitiesIn(handle), restarts: state.restart.count }, handle, id };
}

const rows = await worker.runUntil(async () => {
  const delivered = await pass('delivered', () => undefined);
  const boot = await pass('boot', (boxDir) => {
    for (const name of names) {
      mkdirSync(join(boxDir, 'configs', 'plugins'), { recursive: true });
      cpSync(join(repos, 'bench', `${name}.git`), join(boxDir, 'configs', 'plugins', name), { recursive: true });
    }
  });
  // Converged: the delivered workspace comes back after its restart; its pass finds nothing missing.
  const before = await activitiesIn(delivered.handle);
  const t0 = performance.now();
  await delivered.handle.signal(registerSignal, { id: delivered.id, url: 'http://127.0.0.1:9000', agent_card: {} });
  await until(delivered.handle, (s) => s.counters.reconcilesStarted === 2 && !s.reconcile.running);
  const converged: Row = {
    shape: 'converged',
    seconds: (performance.now() - t0) / 1000,
    activities: (await activitiesIn(delivered.handle)) - before,
    restarts: 0,
  };
  return [delivered.row, boot.row, converged];
});

// Baseline in the same run: the reference cloned every untracked plugin on each online transition.
const cloneDir = join(root, 'clones');
mkdirSync(cloneDir);
const t0 = performance.now();
for (const name of names) {
  execFileSync('git', [
    'clone',
    '-q',
    '--depth=1',
    '--branch',
    'main',
    `file://${repos}/bench/${name}.git`,
    join(cloneDir, name),
  ]);
}
const baseline: Row = { shape: 'baseline', seconds: (performance.now() - t0) / 1000, activities: 0, restarts: 0 };

await env.teardown();
await store.close();
rmSync(root, { recursive: true, force: true });

console.log(`\n${count} declared plugins, local box driver, dev server, PostgreSQL`);
console.log(
  `${'shape'.padEnd(10)} ${'wall s'.padStart(8)} ${'activities'.padStart(11)} ${'restarts'.padStart(9)} ${'vs baseline'.padStart(12)}`,
);
for (const row of [...rows, baseline]) {
  console.log(
    `${row.shape.padEnd(10)} ${row.seconds.toFixed(3).padStart(8)} ${String(row.activities).padStart(11)} ${String(row.restarts).padStart(9)} ${(row.seconds / baseline.seconds).toFixed(2).padStart(12)}`,
  );
}
console.log('activities exclude projection writes; baseline = sequential git clone --depth=1 of every plugin');
