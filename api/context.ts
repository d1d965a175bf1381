/**
 * What every route reaches Temporal and the database through: bounded, mapped to the answers of
 * errors.ts, and counted against the admission limit. Built once per API instance by
 * server.ts and handed to each route plugin.
 */
import type { Client, WorkflowHandle } from '@temporalio/client';
import { ResolverUnavailableError } from '../activities/plugins/errors.js';
import type { SourceSettings } from '../activities/plugins/source.js';
import type { Store } from '../db/store.js';
import type { WorkspaceAccess } from '../db/tables/workspaces.js';
import { checkUrl, type CheckedUrl, type UrlPolicy } from '../url-guard.js';
import { limits } from '../workflows/payloads.js';
import type { LifecycleConfig } from '../workflows/config.js';
import {
  TASK_QUEUE,
  stateQuery,
  workspaceStartInput,
  workspaceWorkflowId,
  type WorkspaceWorkflowInput,
} from '../workflows/definitions.js';
import type { WorkspaceState } from '../workflows/state-machine.js';
import { Admission, defaultAdmissionSettings, type AdmissionSettings } from './admission.js';
import { Metrics } from './metrics.js';
import { DEPENDENCY_RETRY_AFTER_SECONDS, HttpError, badRequest, databaseFailure, temporalFailure } from './errors.js';
import { validatePluginSources } from './plugins.js';

export interface ApiSettings {
  adminToken: string;
  taskQueue: string;
  urlPolicy: UrlPolicy;
  sources: SourceSettings;
  /** Upper bound on one Temporal call; past it the API answers 503 with Retry-After. */
  temporalTimeoutMs: number;
  bodyLimitBytes: number;
  logLevel: string;
  /** How many calls reach Temporal and the database at once; the excess is refused (429). */
  admission: AdmissionSettings;
  /** Lifecycle durations and thresholds for the workflows this API starts (defaults otherwise). */
  lifecycle: Partial<LifecycleConfig>;
  /**
   * For a rollout only, while runtimes that do not send X-Boot-Credential are still deployed: a
   * register with no credential at all passes while the workspace has no live token (trust on
   * first use: whoever reaches the API first after a revocation gets the token). Off by default.
   */
  bootstrapWithoutCredential: boolean;
  /** The status-change stream (GET /events, api/routes/events.ts). */
  events: EventStreamSettings;
}

export interface EventStreamSettings {
  /** Events older than this are deleted from the outbox; a stream resumed from before them is told so. */
  retentionHours: number;
  /** Streams open at once per API process; one more is refused (503). */
  maxStreams: number;
}

export const defaultApiSettings: Omit<ApiSettings, 'adminToken' | 'sources'> = {
  taskQueue: TASK_QUEUE,
  urlPolicy: { allowLoopback: false, allowPrivate: false },
  temporalTimeoutMs: 5_000,
  bodyLimitBytes: 64 * 1024,
  logLevel: 'info',
  admission: defaultAdmissionSettings,
  lifecycle: {},
  bootstrapWithoutCredential: false,
  events: { retentionHours: 168, maxStreams: 64 },
};

/** What a Temporal call is, for the answer when it fails. */
export interface TemporalCall {
  /** It delivers a signal, whose fate is unknown when the deadline passes. */
  signal: boolean;
  /** Its own deadline, when longer than the usual one. */
  timeoutMs?: number;
}
export const SIGNAL: TemporalCall = { signal: true };

export class ApiContext {
  readonly admission: Admission;
  /** Slots of their own for relays, which wait on a workflow's signal (admission.ts). */
  readonly relays: Admission;
  /** The API's metrics; routes count what they see (api/metrics.ts). */
  readonly metrics = new Metrics();

  constructor(
    readonly client: Client,
    readonly store: Store,
    readonly settings: ApiSettings,
  ) {
    this.admission = new Admission(settings.admission);
    this.relays = new Admission({ ...settings.admission, maxInFlight: settings.admission.maxRelaysInFlight });
  }

  /** Runs `work` in an admission slot (429 when none is free). */
  admitted<T>(work: () => Promise<T>): Promise<T> {
    return this.admission.run(work);
  }

  /** Runs a relay (work that waits on a workflow's signal) in a relay slot (429 when none is free). */
  relayed<T>(work: () => Promise<T>): Promise<T> {
    return this.relays.run(work);
  }

  /** A Temporal call, bounded by the deadline; see errors.ts for what each failure answers. */
  async temporal<T>(work: () => Promise<T>, what: TemporalCall = { signal: false }): Promise<T> {
    try {
      return await this.client.withDeadline(Date.now() + (what.timeoutMs ?? this.settings.temporalTimeoutMs), work);
    } catch (err) {
      throw temporalFailure(err, what);
    }
  }

  /** A store call; it fails closed: an unreachable database is 503, never a pass. */
  async db<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      throw databaseFailure(err);
    }
  }

  handle(id: string): WorkflowHandle {
    return this.client.workflow.getHandle(workspaceWorkflowId(id));
  }

  /** The input a workspace's workflow starts with: what the database says it is, and the lifecycle overrides. */
  startInput(workspaceId: string, external: boolean): WorkspaceWorkflowInput {
    return workspaceStartInput(workspaceId, external, this.settings.lifecycle);
  }

  /**
   * The workflow's state query. A query is answered by a worker running the workflow, so one
   * that does not answer in time has two causes, told apart by a describe: the workflow's tasks
   * are failing (502, Temporal answered; the Web UI shows why), or Temporal or the workers are
   * not answering (503).
   */
  async queryState(id: string): Promise<WorkspaceState> {
    const handle = this.handle(id);
    try {
      return await this.temporal(() => handle.query(stateQuery));
    } catch (err) {
      if (!(err instanceof HttpError) || err.statusCode !== 503) throw err;
      const failing = await this.client
        .withDeadline(Date.now() + 2_000, () => workflowTaskFailing(handle))
        .catch(() => null);
      if (failing !== null)
        throw new HttpError(
          502,
          `Temporal answered, but workflow ${workspaceWorkflowId(id)} cannot answer queries: its workflow task ` +
            `is failing (${failing}); the Web UI shows why`,
        );
      throw err;
    }
  }

  /** 404 unless the workspace exists and is not removed; returns what the database knows of it. */
  async requireLiveWorkspace(id: string): Promise<WorkspaceAccess> {
    const access = await this.db(() => this.store.workspaces.access(id));
    if (access === null) throw new HttpError(404, `unknown workspace ${id}`);
    if (access.status === 'removed') throw new HttpError(404, `workspace ${id} is removed`);
    return access;
  }

  /** A plugin set the reconcile would refuse is a 400 naming each bad source. */
  async checkPluginSources(plugins: { name: string; source: string }[], field: string): Promise<void> {
    const issues = await validatePluginSources(plugins, this.settings.sources, field).catch((err: unknown) => {
      throw err instanceof ResolverUnavailableError ? resolverUnavailable(err.message) : err;
    });
    if (issues.length > 0) throw badRequest('invalid plugin sources', issues);
  }

  /**
   * A URL a runtime gives for the platform to reach it, through the URL guard: the normalised
   * form it checked, or a 400 naming the field (503 when the resolver cannot answer now).
   */
  async checkRuntimeUrl(raw: string, field: string): Promise<CheckedUrl> {
    const verdict = await checkUrl(raw, this.settings.urlPolicy, { maxLength: limits.urlLength });
    if (verdict.ok) return verdict.url;
    if (verdict.transient) throw resolverUnavailable(`${field}: ${verdict.reason}`);
    throw badRequest(`unsafe ${field}`, [{ field, problem: verdict.reason }]);
  }
}

function resolverUnavailable(message: string): HttpError {
  return new HttpError(503, `could not resolve a host now: ${message}`, { retryAfter: DEPENDENCY_RETRY_AFTER_SECONDS });
}

/**
 * Why the workflow cannot run its tasks, or null when they are fine: a pending workflow task on
 * its second attempt or later, or a history whose last workflow task failed.
 */
async function workflowTaskFailing(handle: WorkflowHandle): Promise<string | null> {
  const attempt = (await handle.describe()).raw.pendingWorkflowTask?.attempt ?? 0;
  if (attempt > 1) return `attempt ${attempt}`;
  const events = (await handle.fetchHistory()).events ?? [];
  const last = [...events]
    .reverse()
    .find((event) => event.workflowTaskCompletedEventAttributes || event.workflowTaskFailedEventAttributes);
  const failure = last?.workflowTaskFailedEventAttributes?.failure?.message;
  return failure ? `last failure: ${failure}` : null;
}
