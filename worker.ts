/**
 * The worker: runs workspace workflows and their activities on the task queue. Scale out by
 * running more of these against the same Temporal namespace; any worker can serve any workspace.
 */
import { NativeConnection, Worker } from '@temporalio/worker';
import { fileURLToPath } from 'node:url';
import * as activities from './activities/index.js';
import { TASK_QUEUE } from './workflows/definitions.js';

export interface WorkerSettings {
  address: string;
  namespace: string;
  taskQueue: string;
}

export function workerSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): WorkerSettings {
  return {
    address: env['TEMPORAL_ADDRESS'] ?? 'localhost:7233',
    namespace: env['TEMPORAL_NAMESPACE'] ?? 'default',
    taskQueue: env['TEMPORAL_TASK_QUEUE'] ?? TASK_QUEUE,
  };
}

export async function createWorker(settings: WorkerSettings): Promise<Worker> {
  const connection = await NativeConnection.connect({ address: settings.address });
  return Worker.create({
    connection,
    namespace: settings.namespace,
    taskQueue: settings.taskQueue,
    workflowsPath: fileURLToPath(new URL('./workflows/index.ts', import.meta.url)),
    activities,
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const settings = workerSettingsFromEnv();
  const worker = await createWorker(settings);
  console.log(`worker: polling ${settings.taskQueue} on ${settings.address} (namespace ${settings.namespace})`);
  // The SDK stops polling and drains in-flight tasks on SIGINT/SIGTERM.
  await worker.run();
}
