/**
 * The worker: runs workspace workflows and their activities on the task queue. Scale out by
 * running more of these against the same Temporal namespace and database; any worker can
 * serve any workspace. Applies pending database migrations before it starts polling.
 *
 * `npm run worker` outlives its dependencies: while Temporal or the database cannot be reached
 * at start, or after the worker failed (the SDK stops polling after about a minute of errors),
 * it says why and starts again with backoff, until SIGINT or SIGTERM.
 */
import { NativeConnection, Worker } from '@temporalio/worker';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { createActivities } from './activities/index.js';
import { LocalBoxDriver } from './activities/box/local.js';
import { BoxRouter } from './activities/box/router.js';
import { ensureSearchAttributes } from './connection.js';
import { migrate } from './db/migrate.js';
import { Store } from './db/store.js';
import { loadSettings, workerSettings, type WorkerSettings } from './settings.js';
import { bundleInChildProcess } from './workflow-bundle.js';

export interface CreatedWorker {
  worker: Worker;
  store: Store;
  connection: NativeConnection;
  driver: BoxRouter;
}

/**
 * Which allocator this process runs on, from its mapped libraries (Linux), or null where that
 * cannot be read. The cached workflows need about 1.7x the memory on the C library's malloc.
 */
export function memoryAllocator(): 'jemalloc' | 'libc malloc' | null {
  try {
    return readFileSync('/proc/self/maps', 'utf8').includes('/libjemalloc') ? 'jemalloc' : 'libc malloc';
  } catch {
    return null;
  }
}

let allocatorReported = false;
function reportAllocator(): void {
  if (allocatorReported) return;
  allocatorReported = true;
  const allocator = memoryAllocator();
  if (allocator === 'libc malloc')
    console.warn(
      "worker: on the C library's malloc, each cached workflow takes about 1.7x the memory it takes on jemalloc; start the worker with scripts/jemalloc.sh (npm run worker does)",
    );
  else if (allocator !== null) console.log(`worker: memory allocator ${allocator}`);
}

// Built once per process, however often the supervisor starts the worker again.
let bundle: Promise<{ code: string }> | undefined;
function workflowBundle(): Promise<{ code: string }> {
  bundle ??= bundleInChildProcess().catch((err: unknown) => {
    bundle = undefined;
    throw err;
  });
  return bundle;
}

export async function createWorker(settings: WorkerSettings): Promise<CreatedWorker> {
  reportAllocator();
  // The workflow thread the SDK starts below takes its heap limit from this flag. Without it, V8
  // sizes the heap from the machine's memory and lets garbage grow far past the cached workflows'
  // live size; with it, collections keep the process near what the cache needs.
  if (settings.workflowHeapMb !== null) setFlagsFromString(`--max-old-space-size=${settings.workflowHeapMb}`);
  // The SDK keeps each cached workflow's last encoded completion, a small Buffer that, from
  // Node's 8 KB pool, pins the whole slab: a heap snapshot of 1,000 cached workspaces held 737
  // slabs (6 MB). Unpooled, each keeps only its own bytes.
  Buffer.poolSize = 0;
  const applied = await migrate(settings.databaseUrl);
  if (applied.length > 0) console.log(`worker: applied migrations ${applied.join(', ')}`);
  const store = Store.connect(settings.databaseUrl, {
    onIdleError: (err) =>
      console.warn(`worker: a database connection failed (${err.message}); the next query reconnects`),
  });
  // Each workspace's box through the driver its settings name: local by default, or SSH.
  const local = new LocalBoxDriver({
    root: settings.boxesDir,
    runtimeCommand: settings.runtimeCommand,
    runtimeEnv: settings.runtimeEnv,
  });
  const driver = new BoxRouter(local, (workspaceId) => store.boxSettings(workspaceId), settings.sshKeyDir);
  const { connectionOptions, namespace } = settings.temporal;
  let connection: NativeConnection | undefined;
  try {
    connection = await NativeConnection.connect(connectionOptions);
    const registered = await ensureSearchAttributes(connection.operatorService, namespace);
    if (registered.length > 0) console.log(`worker: registered search attributes ${registered.join(', ')}`);
    const worker = await Worker.create({
      connection,
      namespace,
      taskQueue: settings.taskQueue,
      workflowBundle:
        settings.workflowBundlePath === null ? await workflowBundle() : { codePath: settings.workflowBundlePath },
      activities: createActivities({ store, driver, sources: settings.sources }),
      maxCachedWorkflows: settings.maxCachedWorkflows,
    });
    return { worker, store, connection, driver };
  } catch (err) {
    await store.close();
    await connection?.close();
    throw err;
  }
}

const RESTART_BACKOFF_START_MS = 1_000;
const RESTART_BACKOFF_MAX_MS = 30_000;

/** Runs a worker until SIGINT/SIGTERM, starting it again whenever it cannot start or fails. */
export async function superviseWorker(settings: WorkerSettings): Promise<void> {
  const stop = new AbortController();
  // The SDK's own handlers drain a running worker on these signals; this ends the loop.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => stop.abort());
  const { address, namespace } = settings.temporal;
  const where = `${address ?? 'localhost:7233'} (namespace ${namespace})`;
  let backoff = RESTART_BACKOFF_START_MS;
  // A function, not the property: the signal handler changes it while the loop awaits.
  const stopping = (): boolean => stop.signal.aborted;
  while (!stopping()) {
    let created: CreatedWorker;
    try {
      created = await createWorker(settings);
    } catch (err) {
      console.error(`worker: cannot start against ${where}: ${message(err)}; trying again in ${backoff / 1000} s`);
      await sleep(backoff, undefined, { signal: stop.signal }).catch(() => undefined);
      backoff = Math.min(backoff * 2, RESTART_BACKOFF_MAX_MS);
      continue;
    }
    backoff = RESTART_BACKOFF_START_MS;
    const { worker, store, connection, driver } = created;
    console.log(`worker: polling ${settings.taskQueue} on ${where}`);
    try {
      await worker.run();
    } catch (err) {
      console.error(`worker: failed: ${message(err)}; starting again`);
    } finally {
      await driver.close().catch(() => undefined);
      await store.close().catch(() => undefined);
      await connection.close().catch(() => undefined);
    }
    if (!stopping()) await sleep(backoff, undefined, { signal: stop.signal }).catch(() => undefined);
  }
  console.log('worker: stopped');
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    await superviseWorker(workerSettings(loadSettings()));
  } catch (err) {
    console.error(`worker: ${message(err)}`);
    process.exit(1);
  }
}
