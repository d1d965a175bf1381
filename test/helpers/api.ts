import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, expect, inject } from 'vitest';
import type { Activities } from '../../activities/index.js';
import type { SourceSettings } from '../../activities/plugins/source.js';
import { buildApi, defaultApiSettings, type ApiSettings } from '../../api/server.js';
import type { Store } from '../../db/store.js';
import { stateQuery, workspaceWorkflowId } from '../../workflows/definitions.js';
import type { WorkspaceState } from '../../workflows/state-machine.js';
import { createTimeSkippingEnv } from './env.js';
import { recordServer } from './test-servers.js';
import { FakeActivities } from './fake-activities.js';
import { connectTestStore } from './postgres.js';
import { createWorker, uniqueId, waitForState } from './worker.js';
import { parseScrape, total } from './prometheus.js';

export const TEST_ADMIN_TOKEN = 'test-admin-token-0123456789';
export const admin = { authorization: `Bearer ${TEST_ADMIN_TOKEN}` };
/** The deadline of the test APIs' Temporal calls. */
const TEST_TEMPORAL_TIMEOUT_MS = 30_000;
/** A public address literal: passes the URL guard without DNS. */
export const agentUrl = 'http://93.184.216.34:8000';

/** A register's body for `id`: push mode at agentUrl. */
export function registerBody(id: string, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { id, url: agentUrl, agent_card: { name: `agent ${id}` }, delivery_mode: 'push', ...overrides };
}

/**
 * API settings for tests on `taskQueue`: silent, gitea:// and github:// at example hosts,
 * git+file:// under /srv/plugins, any git host unless `sources` lists some. Temporal calls get
 * TEST_TEMPORAL_TIMEOUT_MS: a test server just started on a loaded machine can take longer than
 * the service's deadline to start its first workflow. A test about the deadline sets its own.
 */
export function testApiSettings(
  taskQueue: string,
  sources: Partial<SourceSettings> = {},
  overrides: Partial<ApiSettings> = {},
): ApiSettings {
  return {
    ...defaultApiSettings,
    adminToken: TEST_ADMIN_TOKEN,
    taskQueue,
    logLevel: 'silent',
    temporalTimeoutMs: TEST_TEMPORAL_TIMEOUT_MS,
    sources: {
      giteaBaseUrl: 'https://git.example.test',
      githubBaseUrl: 'https://github.example.test',
      allowUnpinned: false,
      sourceHosts: null,
      fileRoots: ['/srv/plugins'],
      urlPolicy: defaultApiSettings.urlPolicy,
      ...sources,
    },
    ...overrides,
  };
}

/**
 * What the worker behind an API test runs: box activities mocked; the projection with its
 * liveness contract, the heartbeat ledger's read and token revocation the real store's.
 */
function apiTestActivities(fake: FakeActivities, store: Store): Activities {
  return {
    ...fake.activities,
    writeProjection: async (projection) => {
      await store.workspaces.writeProjection(projection);
    },
    readHeartbeatLedger: ({ workspaceId, restartKey }) => store.heartbeats.reading(workspaceId, restartKey),
    revokeInstanceTokens: ({ workspaceId, mintedBefore }) => store.tokens.revoke(workspaceId, mintedBefore),
  };
}

export interface ApiHarnessOptions {
  /**
   * A database of its own (connectTestStore's `isolated`), for a file that asserts on
   * whole-table counts while other files write in parallel.
   */
  database?: string;
  /** The plugin source settings of the API (testApiSettings' `sources`). */
  sources?: Partial<SourceSettings>;
}

interface Started {
  env: TestWorkflowEnvironment;
  store: Store;
  fake: FakeActivities;
  worker: Worker;
  running: Promise<void>;
  api: FastifyInstance;
}

let shared: Promise<TestWorkflowEnvironment> | undefined;

/**
 * The time-skipping server this test process's API files share, started by the first of them: a
 * server per file cost a Java start and a cold compiler each. API tests never skip time (no
 * `env.sleep`, no `result()`), so its clock stays the real one, as PostgreSQL's is; and each file
 * ends its workflows before its worker stops (endWorkflows), so none is left to the next file
 * (the fleet liveness controller has one id for all). Workflow files keep a server each: they
 * skip time, which a later file would inherit. The run's teardown stops it (recordServer).
 */
function sharedServer(): Promise<TestWorkflowEnvironment> {
  shared ??= createTimeSkippingEnv().then(
    (env) => {
      recordServer(env.address, inject('runDir'));
      return env;
    },
    (err: unknown) => {
      shared = undefined;
      throw err;
    },
  );
  return shared;
}

/** Terminates every open workflow on `env`, every page of them. */
async function endWorkflows(env: TestWorkflowEnvironment): Promise<void> {
  const namespace = env.namespace ?? 'default';
  for (;;) {
    const { executions } = await env.client.workflowService.listOpenWorkflowExecutions({
      namespace,
      maximumPageSize: 1_000,
    });
    if (executions.length === 0) return;
    await Promise.all(
      executions.map(({ execution }) =>
        env.client.workflowService.terminateWorkflowExecution({
          namespace,
          workflowExecution: execution,
          reason: 'the test file ended',
        }),
      ),
    );
  }
}

/**
 * One API test file's stack: the process's shared time-skipping server, a worker
 * (apiTestActivities), real PostgreSQL and the API built over them, reached through Fastify's
 * injection. useApiHarness starts it in a beforeAll and closes it in an afterAll; its parts are
 * there in between.
 */
export class ApiHarness {
  readonly taskQueue: string;
  #started: Started | undefined;

  constructor(
    name: string,
    private readonly options: ApiHarnessOptions = {},
  ) {
    this.taskQueue = uniqueId(name);
  }

  async start(): Promise<void> {
    const env = await sharedServer();
    const store = await connectTestStore(this.options.database);
    const fake = new FakeActivities();
    const worker = await createWorker(env, this.taskQueue, apiTestActivities(fake, store));
    const running = worker.run();
    const api = await buildApi(env.client, store, this.settings());
    this.#started = { env, store, fake, worker, running, api };
  }

  /** Closes what start opened, the API first, the store last. */
  async close(): Promise<void> {
    const started = this.#started;
    if (!started) return;
    await started.api.close();
    await endWorkflows(started.env);
    started.worker.shutdown();
    await started.running;
    await started.store.close();
  }

  get env(): TestWorkflowEnvironment {
    return this.started.env;
  }

  get store(): Store {
    return this.started.store;
  }

  get fake(): FakeActivities {
    return this.started.fake;
  }

  get api(): FastifyInstance {
    return this.started.api;
  }

  private get started(): Started {
    if (!this.#started) throw new Error('the API harness is used before its beforeAll started it');
    return this.#started;
  }

  /** The settings of this file's API, with `overrides` (for an API of a test's own over the same store). */
  settings(overrides: Partial<ApiSettings> = {}): ApiSettings {
    return testApiSettings(this.taskQueue, this.options.sources, overrides);
  }

  /** A workspace created through the API, with its first token. */
  async createWorkspace(plugins: { name: string; source: string }[] = []): Promise<{ id: string; token: string }> {
    const id = uniqueId('api');
    const res = await this.api.inject({ method: 'POST', url: '/workspaces', headers: admin, payload: { id, plugins } });
    expect(res.statusCode, res.body).toBe(201);
    return { id, token: res.json<{ auth_token: string }>().auth_token };
  }

  /** A workspace registered through the API, online and projected online, with its bearer header and handle. */
  async registeredOnline(): Promise<{ id: string; bearer: { authorization: string }; handle: WorkflowHandle }> {
    const { id, token } = await this.createWorkspace();
    const bearer = { authorization: `Bearer ${token}` };
    const handle = this.env.client.workflow.getHandle(workspaceWorkflowId(id));
    await this.api.inject({ method: 'POST', url: '/registry/register', headers: bearer, payload: registerBody(id) });
    await waitForState(handle, (s) => s.status === 'online' && !s.reconcile.running);
    await expect.poll(async () => (await this.store.workspaces.access(id))?.status).toBe('online');
    return { id, bearer, handle };
  }

  /** The workspace's workflow state (its query). */
  async state(id: string): Promise<WorkspaceState> {
    return this.env.client.workflow.getHandle(workspaceWorkflowId(id)).query(stateQuery);
  }

  /** How many signals the workspace's workflow has received. */
  async signalsReceived(id: string): Promise<number> {
    const { events } = await this.env.client.workflow.getHandle(workspaceWorkflowId(id)).fetchHistory();
    return (events ?? []).filter((e) => e.workflowExecutionSignaledEventAttributes).length;
  }

  /** The API's metric (or `api`'s, an API of a test's own), summed over its series whose labels include `labels`. */
  async metric(name: string, labels: Record<string, string> = {}, api: FastifyInstance = this.api): Promise<number> {
    const scrape = await api.inject({ method: 'GET', url: '/metrics' });
    return total(parseScrape(scrape.body), name, labels);
  }

  /** The rows in workspaces, declared_plugins and workspace_tokens, for asserting that nothing was written. */
  async rowCounts(): Promise<string> {
    const { rows } = await this.store.pool.query<{ w: string; d: string; t: string }>(
      `SELECT (SELECT count(*) FROM workspaces) AS w, (SELECT count(*) FROM declared_plugins) AS d,
              (SELECT count(*) FROM workspace_tokens) AS t`,
    );
    return JSON.stringify(rows[0]);
  }
}

/** An ApiHarness for this test file, started before its tests and closed after them. */
export function useApiHarness(name: string, options: ApiHarnessOptions = {}): ApiHarness {
  const harness = new ApiHarness(name, options);
  beforeAll(() => harness.start());
  afterAll(() => harness.close());
  return harness;
}
