/**
 * How every process of ours reaches Temporal: the SDK's environment configuration
 * (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS_*`,
 * `TEMPORAL_PROFILE` and the `temporal.toml` profile file), so a Temporal cluster or Temporal
 * Cloud is configured exactly as for the `temporal` CLI. Also makes sure the namespace has the
 * search attributes the workflow sets, since a workflow that upserts an unregistered one is stuck.
 */
import { loadClientConnectConfig } from '@temporalio/envconfig';
import type { ConnectionOptions } from '@temporalio/client';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { NativeConnectionOptions } from '@temporalio/worker';
import { encodeSearchAttributeIndexedValueType } from '@temporalio/common/lib/search-attributes.js';
import { searchAttributeKeys } from './workflows/operator-view.js';

export interface TemporalSettings {
  /** Undefined when nothing configures one: `npm start` then runs a dev server. */
  address: string | undefined;
  namespace: string;
  /** For the worker's NativeConnection; `clientConnectionOptions` maps them for a client Connection. */
  connectionOptions: NativeConnectionOptions;
}

export function temporalSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): TemporalSettings {
  const defined = Object.fromEntries(
    Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined),
  );
  const { connectionOptions, namespace } = loadClientConnectConfig({ overrideEnvVars: defined });
  return { address: connectionOptions.address, namespace: namespace ?? 'default', connectionOptions };
}

/** The same settings at `address` (e.g. the dev server `npm start` runs). */
export function withAddress(settings: TemporalSettings, address: string): TemporalSettings {
  return { ...settings, address, connectionOptions: { ...settings.connectionOptions, address } };
}

export function clientConnectionOptions(settings: TemporalSettings): ConnectionOptions {
  const { address, tls, apiKey, metadata } = settings.connectionOptions;
  return {
    address: address ?? 'localhost:7233',
    ...(tls !== undefined ? { tls } : {}),
    ...(apiKey !== undefined ? { apiKey } : {}),
    ...(metadata !== undefined ? { metadata } : {}),
  };
}

/**
 * Where a dev server keeps its state: a SQLite file in write-ahead-log mode with `synchronous`
 * OFF, so neither a commit nor a checkpoint waits for an fsync. A killed dev server loses nothing
 * (its writes are in the operating system's cache); a crash of the machine itself may lose the
 * last commits or damage the file, which a development server on one machine can afford (a
 * production deployment runs a Temporal cluster). With an fsync per commit, or per checkpoint
 * (`synchronous=normal`), a fleet on one box waits on the disk, not the CPU
 * (docs/performance.md, "The dev server").
 */
export function devServerStorageArgs(dbFile: string): string[] {
  return ['--db-filename', dbFile, '--sqlite-pragma', 'journal_mode=wal', '--sqlite-pragma', 'synchronous=off'];
}

/**
 * How many workflows' state the dev server keeps in memory (its history service's host-level
 * cache, in entries). The CLI sets 8,096. A fleet touches every workspace's workflow in turn
 * (its forwarded heartbeats, its timers), so a least-recently-used cache smaller than the fleet
 * misses on nearly every signal and workflow task, and each miss loads the workflow's state from
 * SQLite again. Sized for the largest fleet one box holds, with room for closed runs after
 * continue-as-new; the memory it costs is in docs/performance.md.
 */
export const DEV_SERVER_WORKFLOW_CACHE_ENTRIES = 32_768;

/**
 * The CLI makes a dev server read its search attributes (and the namespace they belong to) from
 * SQLite again on every request that carries or writes them, so that one created at run time
 * shows at once: each workflow start, each upsert and each visibility record waits for those
 * reads on the database's one connection. Ours are registered as the server starts
 * (`devServerSearchAttributeArgs`), before anything reads them, so its cache serves them; one an
 * operator adds later shows within the cache's refresh (a minute), as on a cluster
 * (`npm run bench:dev-server -- --baseline search-attributes` measures the difference).
 */
export const DEV_SERVER_SEARCH_ATTRIBUTES_READ_THROUGH = false;

/**
 * Partitions of each task queue on a new dev server database (the CLI's default is four).
 * Partitions spread a task queue over the hosts of a cluster's matching service; a dev server is
 * one host, so four only split the worker's few pollers among them: a new workflow's first task,
 * added to a partition no poller waits on, is written to that partition's backlog in SQLite and
 * read back later. With one, every poller waits on the partition every task goes to
 * (docs/performance.md has what it saves).
 */
export const DEV_SERVER_TASK_QUEUE_PARTITIONS = 1;
/** What the CLI gives a database that predates the setting. */
const CLI_TASK_QUEUE_PARTITIONS = 4;

/**
 * The task queue partitions of the dev server database `dbFile`, kept beside it
 * (`<dbFile>.partitions`): a new database gets DEV_SERVER_TASK_QUEUE_PARTITIONS, written down
 * before the server first starts on it; one made before (no such file) keeps the CLI's four,
 * because a partition the server no longer reads strands the tasks in its backlog.
 */
export function devServerTaskQueuePartitions(dbFile: string): number {
  const recorded = `${dbFile}.partitions`;
  if (existsSync(recorded)) {
    const count = Number(readFileSync(recorded, 'utf8').trim());
    if (Number.isInteger(count) && count > 0) return count;
    throw new Error(`${recorded} must hold a positive whole number of task queue partitions`);
  }
  if (existsSync(dbFile)) return CLI_TASK_QUEUE_PARTITIONS;
  writeFileSync(recorded, `${DEV_SERVER_TASK_QUEUE_PARTITIONS}\n`);
  return DEV_SERVER_TASK_QUEUE_PARTITIONS;
}

/**
 * Makes `dbFile` one the dev server of `serverVersion` can open, and returns where a file it
 * cannot open was moved, or null. The dev server sets up the schema of a new database file and
 * never migrates one, so a file another version made (its version is kept beside it, in
 * `<dbFile>.server`; a file without it predates the record) is moved aside with the files that
 * belong to it, and the next start makes a new one. The workspaces it ran are then recreated from
 * the service's database (scripts/recreate-workspaces.ts).
 */
export function retireForeignDevServerDatabase(dbFile: string, serverVersion: string): string | null {
  const recorded = `${dbFile}.server`;
  const madeBy = existsSync(recorded) ? readFileSync(recorded, 'utf8').trim() : 'unrecorded';
  let movedTo: string | null = null;
  if (existsSync(dbFile) && madeBy !== serverVersion) {
    movedTo = `${dbFile}.${madeBy}-${Date.now()}`;
    for (const suffix of ['', '-wal', '-shm', '.partitions', '.server'])
      if (existsSync(dbFile + suffix)) renameSync(dbFile + suffix, movedTo + suffix);
  }
  if (!existsSync(dbFile)) writeFileSync(recorded, `${serverVersion}\n`);
  return movedTo;
}

/**
 * `--dynamic-config-value` arguments that fit the dev server on `dbFile` to a fleet on one box:
 * its cache of workflow state, its search attributes served from its cache, and its task queue
 * partitions.
 */
export function devServerFleetArgs(dbFile: string): string[] {
  const partitions = devServerTaskQueuePartitions(dbFile);
  return [
    '--dynamic-config-value',
    `history.hostLevelCacheMaxSize=${DEV_SERVER_WORKFLOW_CACHE_ENTRIES}`,
    '--dynamic-config-value',
    `system.forceSearchAttributesCacheRefreshOnRead=${DEV_SERVER_SEARCH_ATTRIBUTES_READ_THROUGH}`,
    '--dynamic-config-value',
    `matching.numTaskqueueReadPartitions=${partitions}`,
    '--dynamic-config-value',
    `matching.numTaskqueueWritePartitions=${partitions}`,
  ];
}

/** `--search-attribute` arguments that register ours on a dev server. */
export function devServerSearchAttributeArgs(): string[] {
  return searchAttributeKeys.flatMap((key) => ['--search-attribute', `${key.name}=${cliType(key.type)}`]);
}

/** The CLI command an operator runs to register them on a cluster. */
export function searchAttributeCommand(namespace: string): string {
  const names = searchAttributeKeys.map((key) => `--name ${key.name} --type ${cliType(key.type)}`).join(' ');
  return `temporal operator search-attribute create --namespace ${namespace} ${names}`;
}

const ALREADY_EXISTS = 6; // gRPC status: another worker registered them first

interface OperatorServiceLike {
  listSearchAttributes(request: { namespace: string }): Promise<{ customAttributes?: Record<string, unknown> | null }>;
  addSearchAttributes(request: { namespace: string; searchAttributes: Record<string, number> }): Promise<unknown>;
}

/**
 * Registers the missing search attributes, or explains how to. Servers that cannot list them
 * (the time-skipping test server) are asked to add them all.
 */
export async function ensureSearchAttributes(operator: OperatorServiceLike, namespace: string): Promise<string[]> {
  let missing = [...searchAttributeKeys];
  try {
    const listed = await operator.listSearchAttributes({ namespace });
    missing = missing.filter((key) => !(key.name in (listed.customAttributes ?? {})));
  } catch {
    // Listing is optional; adding below tells us whether the server knows them.
  }
  if (missing.length === 0) return [];
  const searchAttributes = Object.fromEntries(
    missing.map((key) => [key.name, encodeSearchAttributeIndexedValueType(key.type) ?? 0]),
  );
  try {
    await operator.addSearchAttributes({ namespace, searchAttributes });
  } catch (err) {
    if ((err as { code?: unknown }).code === ALREADY_EXISTS) return [];
    throw new Error(
      `search attributes ${missing.map((key) => key.name).join(', ')} are not registered in namespace ${namespace} ` +
        `and could not be registered (${err instanceof Error ? err.message : String(err)}). Register them once: ` +
        searchAttributeCommand(namespace),
    );
  }
  return missing.map((key) => key.name);
}

function cliType(type: string): string {
  return type === 'KEYWORD' ? 'Keyword' : type === 'INT' ? 'Int' : type.charAt(0) + type.slice(1).toLowerCase();
}
