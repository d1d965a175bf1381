/**
 * The worker: runs workspace workflows and their activities on the task queue. Scale out by
 * running more of these against the same Temporal namespace and database; any worker of a build
 * can serve any workspace pinned to that build. Applies pending database migrations before it
 * starts polling.
 *
 * Worker Versioning (docs/versioning.md): the worker polls as one version of a worker
 * deployment, its build id derived from the workflow code it runs. A workspace's run is pinned to
 * the build that started it and moves to the deployment's current build when it continues as new.
 * A worker makes its own version current when the deployment has none yet (a first deploy);
 * otherwise the operator makes a new build current (`npm start` does it for its own worker).
 *
 * Every worker starts the fleet liveness controller, or tells the running one its sweep period
 * (startFleetLiveness: idempotent).
 *
 * `npm run worker` outlives its dependencies: while Temporal or the database cannot be reached
 * at start, or after the worker failed (the SDK stops polling after about a minute of errors),
 * it says why and starts again with backoff, until SIGINT or SIGTERM.
 *
 * Observability (docs/metrics.md): the SDK's metrics and the fleet's domain
 * counters on one Prometheus endpoint (WL_WORKER_METRICS_ADDR), a span per activity when tracing
 * is on, and `workspace_id` (and `trace_id`) on every activity's and workflow's log line.
 */
import { Client } from '@temporalio/client';
import type { WorkerDeploymentVersion } from '@temporalio/common';
import { NativeConnection, Runtime, Worker, type WorkerInterceptors } from '@temporalio/worker';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { createActivities } from './activities/index.js';
import { LifecycleMetrics, ReconcileFailureCounter } from './activities/metrics.js';
import { LocalBoxDriver } from './activities/box/local.js';
import { BoxRouter } from './activities/box/router.js';
import { ensureSearchAttributes } from './connection.js';
import { migrate } from './db/migrate.js';
import { Store } from './db/store.js';
import {
  fleetLivenessSettings,
  loadSettings,
  workerSettings,
  type WorkerSettings,
  type WorkerVersioningSettings,
} from './settings.js';
import { activityInterceptors, startTracing, type Tracing } from './tracing.js';
import { bundleInChildProcess } from './workflow-bundle.js';
import { FLEET_LIVENESS_WORKFLOW_ID, configureSignal, type FleetLivenessSettings } from './workflows/definitions.js';
import type { fleetLivenessWorkflow } from './workflows/fleet-liveness.js';

export interface CreatedWorker {
  worker: Worker;
  store: Store;
  connection: NativeConnection;
  /** A client on the worker's connection: the fleet liveness controller's activities signal with it. */
  client: Client;
  driver: BoxRouter;
  /** The deployment version it polls as; null with versioning off. */
  version: WorkerDeploymentVersion | null;
}

/**
 * Which allocator this process runs on, from its mapped libraries (Linux), or null where that
 * cannot be read. The cached workflows need much more memory on the C library's malloc
 * (docs/performance.md).
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

let runtimeInstalled = false;

/**
 * Installs the process's Temporal runtime, once and before any connection: the SDK's own metrics
 * and the domain counters of the activities (activities/metrics.ts) on a Prometheus endpoint at
 * `address` (`/metrics`), in base units (seconds) with units and `_total` in the names. Returns
 * the metrics URL, or null when none is served: `address` is null, or it cannot be bound (said
 * once; the worker runs on without it: `up` of its scrape job tells the operator).
 */
export function installWorkerRuntime(address: string | null): string | null {
  if (runtimeInstalled || address === null) return null;
  runtimeInstalled = true;
  try {
    Runtime.install({
      telemetryOptions: {
        metrics: {
          prometheus: {
            bindAddress: address,
            countersTotalSuffix: true,
            unitSuffix: true,
            useSecondsForDurations: true,
          },
        },
      },
    });
  } catch (err) {
    console.warn(`worker: metrics not served: ${message(err)} at ${address} (WL_WORKER_METRICS_ADDR)`);
    return null;
  }
  return `http://${address}/metrics`;
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
  // Node's 8 KB pool, pins the whole slab for as long as the workflow stays cached. Unpooled,
  // each keeps only its own bytes.
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
  const driver = new BoxRouter(local, (workspaceId) => store.boxSettings.read(workspaceId), settings.sshKeyDir);
  const { connectionOptions, namespace } = settings.temporal;
  let connection: NativeConnection | undefined;
  try {
    const bundleCode =
      settings.workflowBundlePath === null
        ? await workflowBundle()
        : { code: await readFile(settings.workflowBundlePath, 'utf8') };
    const version = settings.versioning === null ? null : workerVersion(settings.versioning, bundleCode.code);
    connection = await NativeConnection.connect(connectionOptions);
    const client = new Client({ connection, namespace });
    const registered = await ensureSearchAttributes(connection.operatorService, namespace);
    if (registered.length > 0) console.log(`worker: registered search attributes ${registered.join(', ')}`);
    // The runtime's meter: the installed one's endpoint, or nowhere when none was installed.
    const metrics = new LifecycleMetrics(Runtime.instance().metricMeter);
    const tracing = startTracing('workspace-lifecycle-worker', settings.tracing);
    const worker = await Worker.create({
      connection,
      namespace,
      taskQueue: settings.taskQueue,
      workflowBundle: bundleCode,
      activities: createActivities({ store, driver, sources: settings.sources, metrics, temporal: client }),
      interceptors: workerInterceptors(metrics, tracing),
      maxCachedWorkflows: settings.maxCachedWorkflows,
      ...(version === null ? {} : { workerDeploymentOptions: pinnedDeployment(version) }),
    });
    return { worker, store, connection, client, driver, version };
  } catch (err) {
    await store.close();
    await connection?.close();
    throw err;
  }
}

/** The worker's activity interceptors: reconcile failures counted, and traces and log attributes. */
export function workerInterceptors(metrics: LifecycleMetrics, tracing: Tracing | null): WorkerInterceptors {
  return {
    activity: [(ctx) => ({ inbound: new ReconcileFailureCounter(metrics, ctx) }), ...activityInterceptors(tracing)],
  };
}

/**
 * Starts the fleet liveness controller, or gives the running one these settings: a
 * signal-with-start of `configure`, so any worker may do it at any time, and the last one started
 * sets the sweep period and the fleet judgement.
 */
export async function startFleetLiveness(
  client: Client,
  taskQueue: string,
  settings: Partial<FleetLivenessSettings>,
): Promise<void> {
  await client.workflow.signalWithStart<typeof fleetLivenessWorkflow, [Partial<FleetLivenessSettings>]>(
    'fleetLivenessWorkflow',
    {
      workflowId: FLEET_LIVENESS_WORKFLOW_ID,
      taskQueue,
      args: [{ settings }],
      signal: configureSignal,
      signalArgs: [settings],
      staticSummary: 'Fleet liveness controller',
      staticDetails:
        'Sweeps the heartbeat ledger every few seconds for leases that expired, and signals each of those ' +
        'workspaces `leaseExpired` at a bounded rate, unless the fleet is silent at once or no API serves (a ' +
        'disruption) or an operator paused it (docs/fleet-liveness.md). The last sweep: Current Details; ' +
        'everything: the `state` query or GET /fleet.',
    },
  );
}

/**
 * The version a worker polls as: the configured build id, or one derived from the workflow code
 * (the bundle's SHA-256), so workers running the same workflow code are one version wherever
 * they run, and any change to it is a new version.
 */
export function workerVersion(versioning: WorkerVersioningSettings, bundleCode: string): WorkerDeploymentVersion {
  const buildId =
    versioning.buildId ?? `workflows-${createHash('sha256').update(bundleCode).digest('hex').slice(0, 12)}`;
  return { deploymentName: versioning.deploymentName, buildId };
}

/** A workspace's run stays on the build that started it; it moves when it continues as new. */
export function pinnedDeployment(version: WorkerDeploymentVersion) {
  return { version, useWorkerVersioning: true, defaultVersioningBehavior: 'PINNED' } as const;
}

/** What became of a request to make a version current. */
export type MadeCurrent = 'made current' | 'already current' | 'another is current';

const NOT_FOUND = 5;
const FAILED_PRECONDITION = 9;

/**
 * Makes `version` its deployment's current version: workspaces created from now on start on it,
 * and running ones move to it when they next continue as new. With `onlyIfNone`, only when the
 * deployment has no current version yet. The server knows a version once one of its workers has
 * polled, so this waits for that, up to `timeoutMs`.
 */
export async function makeVersionCurrent(
  connection: Pick<NativeConnection, 'workflowService'>,
  namespace: string,
  version: WorkerDeploymentVersion,
  options: { onlyIfNone?: boolean; timeoutMs?: number } = {},
): Promise<MadeCurrent> {
  const service = connection.workflowService;
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  const { deploymentName, buildId } = version;
  for (;;) {
    try {
      const described = await service.describeWorkerDeployment({ namespace, deploymentName });
      const current = described.workerDeploymentInfo?.routingConfig?.currentDeploymentVersion?.buildId;
      if (current === buildId) return 'already current';
      if (options.onlyIfNone === true && current) return 'another is current';
      await service.setWorkerDeploymentCurrentVersion({
        namespace,
        deploymentName,
        buildId,
        conflictToken: described.conflictToken,
        identity: `workspace-lifecycle worker ${buildId}`,
      });
      return 'made current';
    } catch (err) {
      // Not known yet (no poll of this version has reached the server), or changed meanwhile.
      const code = (err as { code?: unknown }).code;
      const transient = code === NOT_FOUND || code === FAILED_PRECONDITION;
      if (!transient || Date.now() > deadline) throw err;
      await sleep(250);
    }
  }
}

/** The CLI command that makes `version` current, for the operator. */
export function setCurrentVersionCommand(version: WorkerDeploymentVersion, namespace: string): string {
  return `temporal worker deployment set-current-version --namespace ${namespace} --deployment-name ${version.deploymentName} --build-id ${version.buildId}`;
}

const RESTART_BACKOFF_START_MS = 1_000;
const RESTART_BACKOFF_MAX_MS = 30_000;

/** Runs a worker until SIGINT/SIGTERM, starting it again whenever it cannot start or fails. */
export async function superviseWorker(settings: WorkerSettings): Promise<void> {
  const metricsUrl = installWorkerRuntime(settings.metricsAddress);
  if (metricsUrl !== null) console.log(`worker: metrics at ${metricsUrl}`);
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
    const { worker, store, connection, client, driver, version } = created;
    console.log(`worker: polling ${settings.taskQueue} on ${where}${version ? ` as ${describeVersion(version)}` : ''}`);
    try {
      const running = worker.run();
      if (version !== null) void reportCurrent(connection, namespace, version);
      startFleetLiveness(client, settings.taskQueue, fleetLivenessSettings(settings)).catch((err: unknown) =>
        console.warn(
          `worker: could not start the fleet liveness controller (${message(err)}); the next worker start tries again`,
        ),
      );
      await running;
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

function describeVersion(version: WorkerDeploymentVersion): string {
  return `build ${version.buildId} of deployment ${version.deploymentName}`;
}

/** A first deploy makes itself current; a later build says how to make it current. */
async function reportCurrent(
  connection: NativeConnection,
  namespace: string,
  version: WorkerDeploymentVersion,
): Promise<void> {
  try {
    const result = await makeVersionCurrent(connection, namespace, version, { onlyIfNone: true });
    if (result === 'made current') console.log(`worker: ${describeVersion(version)} is current (the first)`);
    if (result === 'another is current')
      console.log(
        `worker: another build is current; running workspaces stay on it until this one is: ${setCurrentVersionCommand(version, namespace)}`,
      );
  } catch (err) {
    console.warn(`worker: could not read or set the deployment's current version: ${message(err)}`);
  }
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
