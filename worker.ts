/**
 * The worker: runs workspace workflows and their activities on the task queue. Scale out by
 * running more of these against the same Temporal namespace and database; any worker can
 * serve any workspace. Applies pending database migrations before it starts polling.
 */
import { NativeConnection, Worker } from '@temporalio/worker';
import { fileURLToPath } from 'node:url';
import { createActivities } from './activities/index.js';
import { boxesDirFromEnv, runtimeCommandFromEnv, sourceSettingsFromEnv } from './activities/settings.js';
import { LocalBoxDriver } from './activities/box/local.js';
import type { SourceSettings } from './activities/plugins/source.js';
import type { StageSettings } from './activities/plugins/stage.js';
import { ensureSearchAttributes, temporalSettingsFromEnv, type TemporalSettings } from './connection.js';
import { migrate } from './db/migrate.js';
import { Store } from './db/store.js';
import { TASK_QUEUE } from './workflows/definitions.js';

export interface WorkerSettings {
  temporal: TemporalSettings;
  taskQueue: string;
  databaseUrl: string;
  boxesDir: string;
  runtimeCommand: string[] | null;
  sources: SourceSettings & StageSettings;
}

export function workerSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): WorkerSettings {
  const databaseUrl = env['DATABASE_URL'];
  if (!databaseUrl)
    throw new Error('DATABASE_URL is not set (e.g. postgres://user@127.0.0.1:5432/workspace_lifecycle)');
  return {
    temporal: temporalSettingsFromEnv(env),
    taskQueue: env['TEMPORAL_TASK_QUEUE'] ?? TASK_QUEUE,
    databaseUrl,
    boxesDir: boxesDirFromEnv(env),
    runtimeCommand: runtimeCommandFromEnv(env),
    sources: sourceSettingsFromEnv(env),
  };
}

export async function createWorker(settings: WorkerSettings): Promise<{ worker: Worker; store: Store }> {
  const applied = await migrate(settings.databaseUrl);
  if (applied.length > 0) console.log(`worker: applied migrations ${applied.join(', ')}`);
  const store = Store.connect(settings.databaseUrl);
  const driver = new LocalBoxDriver({ root: settings.boxesDir, runtimeCommand: settings.runtimeCommand });
  const { connectionOptions, namespace } = settings.temporal;
  const connection = await NativeConnection.connect(connectionOptions);
  const registered = await ensureSearchAttributes(connection.operatorService, namespace);
  if (registered.length > 0) console.log(`worker: registered search attributes ${registered.join(', ')}`);
  const worker = await Worker.create({
    connection,
    namespace,
    taskQueue: settings.taskQueue,
    workflowsPath: fileURLToPath(new URL('./workflows/index.ts', import.meta.url)),
    activities: createActivities({ store, driver, sources: settings.sources }),
  });
  return { worker, store };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const settings = workerSettingsFromEnv();
  const { worker, store } = await createWorker(settings);
  const { address, namespace } = settings.temporal;
  console.log(`worker: polling ${settings.taskQueue} on ${address ?? 'localhost:7233'} (namespace ${namespace})`);
  // The SDK stops polling and drains in-flight tasks on SIGINT/SIGTERM.
  await worker.run();
  await store.close();
}
