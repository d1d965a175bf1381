/**
 * Every setting a process of ours reads from the environment, loaded once at its start by
 * `loadSettings()` and passed on as values (`startApi(settings)`, `workerSettings(settings)`),
 * so no module reads `process.env` behind the caller's back. Each variable is in the README's
 * configuration table. A bad value is a SettingsError whose message names the variable.
 */
import { existsSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import type { SourceSettings } from './activities/plugins/source.js';
import type { StageSettings } from './activities/plugins/stage.js';
import { defaultAdmissionSettings } from './api/admission.js';
import { defaultApiSettings, type ApiSettings } from './api/context.js';
import { SERVING_MARK_EVERY_MS } from './api/serving.js';
import type { UrlPolicy } from './url-guard.js';
import { temporalSettingsFromEnv, type TemporalSettings } from './connection.js';
import { parseLifecycleOverrides } from './workflows/config.js';
import { TASK_QUEUE, defaultFleetLivenessSettings, type FleetLivenessSettings } from './workflows/definitions.js';
import { projectPath } from './project.js';

/** A setting is missing or malformed; the message names the variable and what it needs. */
export class SettingsError extends Error {
  override readonly name = 'SettingsError';
}

/** Which worker deployment version a worker polls as (docs/versioning.md). */
export interface WorkerVersioningSettings {
  deploymentName: string;
  /** Unset: derived from the workflow code (worker.ts workerVersion). */
  buildId: string | undefined;
}

/** The worker's settings. */
export interface WorkerSettings {
  temporal: TemporalSettings;
  taskQueue: string;
  databaseUrl: string;
  boxesDir: string;
  runtimeCommand: string[] | null;
  /**
   * Variables the local box runtimes get besides the allowed part of the worker's environment
   * (RUNTIME_ENV_ALLOWED in activities/box/local.ts): WL_RUNTIME_PASS_ENV's, and e.g. WL_API_URL.
   */
  runtimeEnv: Record<string, string>;
  sources: SourceSettings & StageSettings;
  /**
   * Workflows kept in the worker's cache. A signal to a workflow not in the cache replays its
   * run's history first, so the cache holds the fleet (its memory: docs/performance.md).
   */
  maxCachedWorkflows: number;
  /** Heap limit of the worker's workflow thread, in MB; null: V8's default (a share of the machine's memory). */
  workflowHeapMb: number | null;
  /** Where the SSH box driver finds the private key files workspaces' box settings name. */
  sshKeyDir: string;
  /** Null: an unversioned worker, for servers without worker deployments (the time-skipping test server). */
  versioning: WorkerVersioningSettings | null;
  /** How often the fleet liveness controller the worker starts sweeps the heartbeat ledger. */
  livenessSweepEveryMs: number;
  /** How the controller judges the fleet before a workspace: disruption and remediation budget. */
  fleetJudgement: FleetJudgement;
  /**
   * A workflow bundle built beforehand (WL_WORKFLOW_BUNDLE), for a harness that starts many
   * workers of one build; null: the worker bundles workflows/ as it starts.
   */
  workflowBundlePath: string | null;
  /** Where the worker serves its Prometheus metrics (`host:port`); null: not served. */
  metricsAddress: string | null;
  /** Where traces go; null: tracing is off. */
  tracing: TracingSettings | null;
}

/** Where a process sends its traces: an OTLP/HTTP endpoint. */
export interface TracingSettings {
  /** The traces URL (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_EXPORTER_OTLP_ENDPOINT + `/v1/traces`). */
  url: string;
}

/** The fleet liveness controller's fleet-wide judgement (docs/fleet-liveness.md), from WL_DISRUPTION_SHARE, WL_DISRUPTION_MIN_LEASES, WL_API_SERVING_GRACE_MS and WL_REMEDIATION_PER_MINUTE. */
export type FleetJudgement = Pick<
  FleetLivenessSettings,
  'disruptionShare' | 'disruptionMinLeases' | 'apiServingGraceMs' | 'remediationPerMinute'
>;

/** What a process that starts the fleet liveness controller configures it with. */
export function fleetLivenessSettings(
  settings: Pick<WorkerSettings, 'livenessSweepEveryMs' | 'fleetJudgement'>,
): Partial<FleetLivenessSettings> {
  return { sweepEveryMs: settings.livenessSweepEveryMs, ...settings.fleetJudgement };
}

/** Everything a process reads, as loaded; the worker's and the API's settings derive from it. */
export interface Settings {
  dataDir: string;
  temporal: TemporalSettings;
  taskQueue: string;
  /** Unset: `npm start` runs the embedded database; the worker and the API need one. */
  databaseUrl: string | undefined;
  boxesDir: string;
  runtimeCommand: string[] | null;
  /** The variables WL_RUNTIME_PASS_ENV names, with their values: passed to the local box runtimes. */
  runtimeEnv: Record<string, string>;
  /** The SSH box driver's private key files, which a workspace's SSH settings name by `keyRef`. */
  sshKeyDir: string;
  sources: SourceSettings & StageSettings;
  maxCachedWorkflows: number;
  workflowHeapMb: number | null;
  versioning: WorkerVersioningSettings | null;
  metricsAddress: string | null;
  tracing: TracingSettings | null;
  livenessSweepEveryMs: number;
  fleetJudgement: FleetJudgement;
  workflowBundlePath: string | null;
  /** Whether WL_PLUGIN_SOURCE_FILE_ROOTS was set at all (`npm start` allows the simulator's repositories unless told otherwise). */
  fileRootsConfigured: boolean;
  api: Omit<ApiSettings, 'adminToken' | 'sources' | 'taskQueue'> & {
    /** Unset: `npm start` makes one; `npm run api` refuses to start. */
    adminToken: string | undefined;
    /** Whether WL_ALLOW_LOOPBACK_URLS was set at all (`npm start` allows loopback unless told not to). */
    loopbackConfigured: boolean;
    host: string;
    port: number;
  };
  /** What `npm start` runs when nothing else is configured. */
  local: { temporalPort: number; uiPort: number; embeddedDbPort: number };
}

export function loadSettings(env: NodeJS.ProcessEnv = process.env): Settings {
  return {
    dataDir: dataDir(env),
    temporal: temporalSettingsFromEnv(env),
    taskQueue: env['TEMPORAL_TASK_QUEUE'] ?? TASK_QUEUE,
    databaseUrl: env['DATABASE_URL'] || undefined,
    boxesDir: boxesDirFromEnv(env),
    runtimeCommand: runtimeCommandFromEnv(env),
    runtimeEnv: runtimePassEnvFromEnv(env),
    sshKeyDir: sshKeyDirFromEnv(env),
    sources: sourceSettingsFromEnv(env),
    maxCachedWorkflows: integer(env, 'WL_WORKER_MAX_CACHED_WORKFLOWS', 10_000, 2),
    workflowHeapMb:
      env['WL_WORKER_WORKFLOW_HEAP_MB'] === '0' ? null : integer(env, 'WL_WORKER_WORKFLOW_HEAP_MB', 1536, 256),
    versioning: versioningFromEnv(env),
    metricsAddress: metricsAddressFromEnv(env),
    tracing: tracingFromEnv(env),
    livenessSweepEveryMs: integer(
      env,
      'WL_LIVENESS_SWEEP_EVERY_MS',
      defaultFleetLivenessSettings.sweepEveryMs,
      MIN_LIVENESS_SWEEP_EVERY_MS,
    ),
    fleetJudgement: fleetJudgementFromEnv(env),
    workflowBundlePath: existingFile(env, 'WL_WORKFLOW_BUNDLE'),
    fileRootsConfigured: env['WL_PLUGIN_SOURCE_FILE_ROOTS'] !== undefined,
    api: {
      ...defaultApiSettings,
      adminToken: adminTokenFromEnv(env),
      loopbackConfigured: env['WL_ALLOW_LOOPBACK_URLS'] !== undefined,
      urlPolicy: urlPolicyFromEnv(env),
      logLevel: env['LOG_LEVEL'] ?? 'info',
      lifecycle: lifecycleOverrides(env),
      bootstrapWithoutCredential: env['WL_BOOTSTRAP_WITHOUT_CREDENTIAL'] === 'true',
      events: {
        retentionHours: integer(env, 'WL_EVENTS_RETENTION_HOURS', defaultApiSettings.events.retentionHours, 1),
        maxStreams: integer(env, 'WL_EVENTS_MAX_STREAMS', defaultApiSettings.events.maxStreams, 1),
      },
      admission: {
        ...defaultAdmissionSettings,
        maxInFlight: integer(env, 'WL_API_MAX_IN_FLIGHT', defaultAdmissionSettings.maxInFlight, 1),
        maxRelaysInFlight: integer(env, 'WL_API_MAX_RELAYS_IN_FLIGHT', defaultAdmissionSettings.maxRelaysInFlight, 1),
        targetLatencyMs: integer(env, 'WL_API_TARGET_LATENCY_MS', defaultAdmissionSettings.targetLatencyMs, 1),
        maxQueued: integer(env, 'WL_API_MAX_QUEUED', defaultAdmissionSettings.maxQueued, 0),
        maxQueueWaitMs: integer(env, 'WL_API_MAX_QUEUE_WAIT_MS', defaultAdmissionSettings.maxQueueWaitMs, 1),
      },
      host: env['WL_API_HOST'] ?? '127.0.0.1',
      port: integer(env, 'WL_API_PORT', 8080, 0),
    },
    local: {
      temporalPort: integer(env, 'TEMPORAL_PORT', 7233, 1),
      uiPort: integer(env, 'TEMPORAL_UI_PORT', 8233, 1),
      embeddedDbPort: integer(env, 'WL_EMBEDDED_DB_PORT', 0, 0),
    },
  };
}

/** The API's settings; it needs the admin token and a database. */
export function apiSettings(settings: Settings): ApiSettings {
  const { adminToken, urlPolicy, temporalTimeoutMs, bodyLimitBytes, logLevel, admission, lifecycle } = settings.api;
  const { bootstrapWithoutCredential, events } = settings.api;
  if (adminToken === undefined) throw new SettingsError('WL_ADMIN_TOKEN must be set (16 characters or more)');
  const { taskQueue, sources } = settings;
  return {
    adminToken,
    taskQueue,
    urlPolicy,
    sources,
    temporalTimeoutMs,
    bodyLimitBytes,
    logLevel,
    admission,
    lifecycle,
    bootstrapWithoutCredential,
    events,
  };
}

/** The worker's settings; it needs a database. */
export function workerSettings(settings: Settings, runtimeEnv: Record<string, string> = {}): WorkerSettings {
  return {
    temporal: settings.temporal,
    taskQueue: settings.taskQueue,
    databaseUrl: requireDatabaseUrl(settings),
    boxesDir: settings.boxesDir,
    runtimeCommand: settings.runtimeCommand,
    runtimeEnv: { ...settings.runtimeEnv, ...runtimeEnv },
    sources: settings.sources,
    maxCachedWorkflows: settings.maxCachedWorkflows,
    workflowHeapMb: settings.workflowHeapMb,
    sshKeyDir: settings.sshKeyDir,
    versioning: settings.versioning,
    metricsAddress: settings.metricsAddress,
    tracing: settings.tracing,
    livenessSweepEveryMs: settings.livenessSweepEveryMs,
    fleetJudgement: settings.fleetJudgement,
    workflowBundlePath: settings.workflowBundlePath,
  };
}

/** Where a worker serves its Prometheus metrics unless WL_WORKER_METRICS_ADDR says otherwise. */
export const DEFAULT_WORKER_METRICS_ADDRESS = '127.0.0.1:9464';

/**
 * WL_WORKER_METRICS_ADDR: `host:port` (an IPv6 host in brackets) where the worker serves its
 * Prometheus metrics, or `off`. Each worker on one host needs a port of its own.
 */
export function metricsAddressFromEnv(env: NodeJS.ProcessEnv): string | null {
  const value = env['WL_WORKER_METRICS_ADDR'] || DEFAULT_WORKER_METRICS_ADDRESS;
  if (value === 'off') return null;
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(value);
  const port = Number(match?.[2]);
  if (match === null || port > 65_535)
    throw new SettingsError(
      `WL_WORKER_METRICS_ADDR must be host:port (e.g. 0.0.0.0:9464) or off, got ${JSON.stringify(value)}`,
    );
  return value;
}

/**
 * Tracing is on when an OTLP endpoint is set, the OpenTelemetry way: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
 * (the traces URL itself) or OTEL_EXPORTER_OTLP_ENDPOINT (its base; `/v1/traces` is appended).
 */
export function tracingFromEnv(env: NodeJS.ProcessEnv): TracingSettings | null {
  const traces = env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'];
  const base = env['OTEL_EXPORTER_OTLP_ENDPOINT'];
  const [variable, url] = traces
    ? ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', traces]
    : base
      ? ['OTEL_EXPORTER_OTLP_ENDPOINT', `${base.replace(/\/+$/, '')}/v1/traces`]
      : [null, null];
  if (variable === null) return null;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new SettingsError(`${variable} must be an http(s) URL, got ${JSON.stringify(env[variable])}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
    throw new SettingsError(`${variable} must be an http(s) URL, got ${JSON.stringify(env[variable])}`);
  return { url: parsed.href };
}
/** The shortest sweep period an operator may set: a sweep reads the whole heartbeat ledger. */
export const MIN_LIVENESS_SWEEP_EVERY_MS = 1_000;
/** The shortest grace without an API serving mark: three marks missed, so one slow mark is no disruption. */
export const MIN_API_SERVING_GRACE_MS = 3 * SERVING_MARK_EVERY_MS;

/** The deployment every worker of this service belongs to, unless WL_WORKER_DEPLOYMENT names another. */
export const DEFAULT_WORKER_DEPLOYMENT = 'workspace-lifecycle';

/**
 * WL_WORKER_VERSIONING (`true` by default; `false`: an unversioned worker), WL_WORKER_DEPLOYMENT
 * and WL_WORKER_BUILD_ID. A deployment name or build id holds letters, digits, '-' and '_'.
 */
export function versioningFromEnv(env: NodeJS.ProcessEnv): WorkerVersioningSettings | null {
  const flag = env['WL_WORKER_VERSIONING'] ?? 'true';
  if (flag !== 'true' && flag !== 'false')
    throw new SettingsError(`WL_WORKER_VERSIONING must be true or false, got ${JSON.stringify(flag)}`);
  if (flag === 'false') return null;
  const name = (variable: string): string | undefined => {
    const value = env[variable];
    if (value === undefined || value === '') return undefined;
    if (!/^[A-Za-z0-9_-]{1,200}$/.test(value))
      throw new SettingsError(`${variable} must be 1-200 letters, digits, '-' or '_', got ${JSON.stringify(value)}`);
    return value;
  };
  return {
    deploymentName: name('WL_WORKER_DEPLOYMENT') ?? DEFAULT_WORKER_DEPLOYMENT,
    buildId: name('WL_WORKER_BUILD_ID'),
  };
}

export function requireDatabaseUrl(settings: Settings): string {
  if (settings.databaseUrl === undefined)
    throw new SettingsError('DATABASE_URL is not set (e.g. postgres://user@127.0.0.1:5432/workspace_lifecycle)');
  return settings.databaseUrl;
}

function adminTokenFromEnv(env: NodeJS.ProcessEnv): string | undefined {
  const token = env['WL_ADMIN_TOKEN'];
  if (token === undefined || token === '') return undefined;
  if (token.length < 16)
    throw new SettingsError(`WL_ADMIN_TOKEN must be at least 16 characters (it has ${token.length})`);
  return token;
}

function lifecycleOverrides(env: NodeJS.ProcessEnv): ApiSettings['lifecycle'] {
  const text = env['WL_LIFECYCLE_CONFIG'];
  if (!text) return {};
  try {
    return parseLifecycleOverrides(text);
  } catch (err) {
    throw new SettingsError(`WL_LIFECYCLE_CONFIG: ${(err as Error).message}`);
  }
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min)
    throw new SettingsError(`${name} must be an integer >= ${min}, got ${raw}`);
  return value;
}

function fleetJudgementFromEnv(env: NodeJS.ProcessEnv): FleetJudgement {
  const d = defaultFleetLivenessSettings;
  const share = positiveNumber(env, 'WL_DISRUPTION_SHARE', d.disruptionShare);
  if (share > 1)
    throw new SettingsError(`WL_DISRUPTION_SHARE must be a share of the fleet, above 0 and at most 1, got ${share}`);
  return {
    disruptionShare: share,
    disruptionMinLeases: integer(env, 'WL_DISRUPTION_MIN_LEASES', d.disruptionMinLeases, 1),
    apiServingGraceMs: integer(env, 'WL_API_SERVING_GRACE_MS', d.apiServingGraceMs, MIN_API_SERVING_GRACE_MS),
    remediationPerMinute: integer(env, 'WL_REMEDIATION_PER_MINUTE', d.remediationPerMinute, 1),
  };
}

/** An absolute path to a file that exists; null when the variable is unset or empty. */
function existingFile(env: NodeJS.ProcessEnv, name: string): string | null {
  const raw = env[name];
  if (raw === undefined || raw === '') return null;
  if (!isAbsolute(raw)) throw new SettingsError(`${name} must be an absolute path, got ${raw}`);
  if (!existsSync(raw)) throw new SettingsError(`${name} names ${raw}, which does not exist`);
  return raw;
}

/** Where local state lives (dev server database, boxes, plugin cache): `WL_DATA_DIR` or `data/`. */
export function dataDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env['WL_DATA_DIR'] ?? projectPath('data'));
}

export function positiveNumber(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const value = Number(env[name] ?? fallback);
  if (!Number.isFinite(value) || value <= 0)
    throw new SettingsError(`${name} must be a positive number, got ${env[name]}`);
  return value;
}

/**
 * Which loopback and private addresses the URL guard lets through: the same for runtime URLs
 * (`api.urlPolicy`) and git hosts (`sources.urlPolicy`), both loaded from these variables.
 */
export function urlPolicyFromEnv(env: NodeJS.ProcessEnv = process.env): UrlPolicy {
  return {
    allowLoopback: env['WL_ALLOW_LOOPBACK_URLS'] === 'true',
    allowPrivate: env['WL_ALLOW_PRIVATE_URLS'] === 'true',
  };
}

export function sourceSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): SourceSettings & StageSettings {
  return {
    urlPolicy: urlPolicyFromEnv(env),
    giteaBaseUrl: env['WL_GITEA_BASE_URL'] ?? '',
    githubBaseUrl: env['WL_GITHUB_BASE_URL'] ?? 'https://github.com',
    allowUnpinned: env['WL_ALLOW_UNPINNED_PLUGINS'] === 'true',
    sourceHosts: list(env, 'WL_PLUGIN_SOURCE_HOSTS')?.map((host) => host.toLowerCase()) ?? null,
    fileRoots: (list(env, 'WL_PLUGIN_SOURCE_FILE_ROOTS') ?? []).map((root) => {
      if (!isAbsolute(root))
        throw new SettingsError(`WL_PLUGIN_SOURCE_FILE_ROOTS must list absolute directories, got ${root}`);
      return resolve(root);
    }),
    pluginsDir: resolve(env['WL_PLUGINS_DIR'] ?? join(dataDir(env), 'plugins')),
    cacheDir: resolve(env['WL_PLUGIN_CACHE_DIR'] ?? join(dataDir(env), 'plugin-cache')),
    maxPluginBytes: positiveNumber(env, 'WL_PLUGIN_MAX_BYTES', 100 * 1024 * 1024),
    fetchTimeoutMs: positiveNumber(env, 'WL_PLUGIN_FETCH_TIMEOUT_MS', 5 * 60_000),
    cacheMaxAgeMs: positiveNumber(env, 'WL_PLUGIN_CACHE_MAX_AGE_HOURS', 24) * 3_600_000,
  };
}

/** A comma-separated list, blanks dropped; undefined when the variable is unset. */
function list(env: NodeJS.ProcessEnv, name: string): string[] | undefined {
  const raw = env[name];
  if (raw === undefined) return undefined;
  return raw
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

export function dataPath(name: string, env: NodeJS.ProcessEnv = process.env): string {
  return join(dataDir(env), name);
}

/** Where `npm run simulate` makes its plugin repositories (git+file:// sources). */
export function simulatorReposDir(dataDirectory: string): string {
  return join(dataDirectory, 'simulator', 'repos');
}

/** Where the local box driver keeps its boxes: `WL_BOXES_DIR` or `<data dir>/boxes`. */
export function boxesDirFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env['WL_BOXES_DIR'] ?? dataPath('boxes', env));
}

/** Where the SSH box driver finds the private keys workspaces name: `WL_SSH_KEY_DIR` or `<data dir>/ssh-keys`. */
export function sshKeyDirFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env['WL_SSH_KEY_DIR'] ?? dataPath('ssh-keys', env));
}

/** The admin token `npm start` makes when `WL_ADMIN_TOKEN` is unset, for the simulator to read. */
export function adminTokenPath(env: NodeJS.ProcessEnv = process.env): string {
  return dataPath('admin-token', env);
}

/**
 * `WL_RUNTIME_COMMAND`: the runtime the local box driver runs in each box, a JSON array of
 * non-empty strings (program, then arguments); null when unset or empty. Throws, naming the
 * variable, when it is not JSON or not such an array.
 */
export function runtimeCommandFromEnv(env: NodeJS.ProcessEnv = process.env): string[] | null {
  const text = env['WL_RUNTIME_COMMAND'];
  if (text === undefined || text.trim() === '') return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new SettingsError(`WL_RUNTIME_COMMAND is not valid JSON (${(err as Error).message}): ${text}`);
  }
  if (
    !Array.isArray(parsed) ||
    parsed.length === 0 ||
    !parsed.every((part): part is string => typeof part === 'string' && part !== '')
  )
    throw new SettingsError(
      `WL_RUNTIME_COMMAND must be a JSON array of non-empty strings (program, then arguments), ` +
        `e.g. ["node","runtime.js"], got ${text}`,
    );
  return parsed;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * `WL_RUNTIME_PASS_ENV`: the variables of this environment the local box runtimes get besides
 * the allow-list, comma-separated names (e.g. a model provider's key the agent needs); each set
 * one with its value. A runtime sees nothing else of the worker's environment, which holds its
 * secrets.
 */
export function runtimePassEnvFromEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const passed: Record<string, string> = {};
  for (const name of list(env, 'WL_RUNTIME_PASS_ENV') ?? []) {
    if (!ENV_NAME.test(name))
      throw new SettingsError(`WL_RUNTIME_PASS_ENV must list variable names separated by commas, got ${name}`);
    const value = env[name];
    if (value !== undefined) passed[name] = value;
  }
  return passed;
}

/** The simulated runtime (simulator/runtime.ts) under tsx, with this Node: what `npm start` runs in local boxes by default. */
export function defaultRuntimeCommand(): string[] {
  return [process.execPath, '--import', import.meta.resolve('tsx/esm'), projectPath('simulator', 'runtime.ts')];
}
