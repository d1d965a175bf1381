/**
 * The thin HTTP API. It authenticates and validates each call, relays it to the workspace's
 * workflow, and answers fast. It holds no lifecycle logic: statuses, reconciles, restarts and
 * verdicts are the workflow's. A signal that was not delivered is never answered with 200.
 */
import { WorkflowUpdateFailedError, type Client, type WorkflowHandle } from '@temporalio/client';
import swagger from '@fastify/swagger';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import {
  hasZodFastifySchemaValidationErrors,
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { SourceSettings } from '../activities/plugins/source.js';
import type { Store } from '../db/store.js';
import { heartbeatPayloadSchema, registerPayloadSchema } from '../workflows/payloads.js';
import {
  TASK_QUEUE,
  declarePluginsSignal,
  deprovisionSignal,
  dispatchFailedUpdate,
  restartSignal,
  stateQuery,
  workspaceWorkflowId,
} from '../workflows/definitions.js';
import { workspaceStartMetadata } from '../workflows/operator-view.js';
import type { LifecycleConfig } from '../workflows/config.js';
import { statuses, type WorkspaceState } from '../workflows/state-machine.js';
import { Admission, defaultAdmissionSettings, type AdmissionSettings } from './admission.js';
import {
  DEPENDENCY_RETRY_AFTER_SECONDS,
  HttpError,
  badRequest,
  databaseFailure,
  errorBody,
  errors,
  temporalFailure,
} from './errors.js';
import { Metrics } from './metrics.js';
import { relayRuntimeSignal } from './relay.js';
import { declaredPluginsSchema, validatePluginSources } from './plugins.js';
import { unsafeUrlReason, type UrlPolicy } from './ssrf.js';
import { authorizeRuntime, isAdmin, mintTokenIfNone, type RuntimeCall } from './tokens.js';

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
}

export const defaultApiSettings: Omit<ApiSettings, 'adminToken' | 'sources'> = {
  taskQueue: TASK_QUEUE,
  urlPolicy: { allowLoopback: false, allowPrivate: false },
  temporalTimeoutMs: 5_000,
  bodyLimitBytes: 64 * 1024,
  logLevel: 'info',
  admission: defaultAdmissionSettings,
  lifecycle: {},
};
const workspaceId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'must be 1-128 letters, digits, ".", "_" or "-"');
const idParams = z.strictObject({ id: workspaceId });

export async function buildApi(client: Client, store: Store, settings: ApiSettings): Promise<FastifyInstance> {
  const app = Fastify({
    logger: { level: settings.logLevel },
    bodyLimit: settings.bodyLimitBytes,
  }).withTypeProvider<ZodTypeProvider>();
  // JSON only: anything else is 415, not a string the schema then rejects.
  app.removeContentTypeParser('text/plain');
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  await app.register(swagger, {
    openapi: {
      info: {
        title: 'workspace-lifecycle',
        version: '0.1.0',
        description: 'Runtime registry and workspace management',
      },
      components: {
        securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      },
    },
    transform: jsonSchemaTransform,
  });

  const metrics = new Metrics();
  app.addHook('onResponse', async (request, reply) => {
    metrics.observe(
      request.method,
      request.routeOptions.url ?? 'unmatched',
      reply.statusCode,
      reply.elapsedTime / 1000,
    );
  });

  app.setErrorHandler((error, request, reply) => {
    if (hasZodFastifySchemaValidationErrors(error)) {
      const issues = error.validation.map((issue) => ({
        field: [error.validationContext, ...issue.instancePath.split('/').filter(Boolean)].join('.'),
        problem: issue.message ?? 'is invalid',
      }));
      return reply.status(400).send({ error: `invalid ${error.validationContext ?? 'request'}`, issues });
    }
    if (error instanceof HttpError) {
      const { retryAfter, issues, delivery } = error.options;
      if (retryAfter !== undefined) void reply.header('Retry-After', String(retryAfter));
      return reply
        .status(error.statusCode)
        .send({ error: error.message, ...(issues ? { issues } : {}), ...(delivery ? { delivery } : {}) });
    }
    const status = (error as { statusCode?: number }).statusCode;
    // Fastify's own 400s (malformed or empty JSON) name the body, like every other 400.
    if (status === 400) {
      return reply
        .status(400)
        .send({ error: 'invalid body', issues: [{ field: 'body', problem: (error as Error).message }] });
    }
    if (status !== undefined && status >= 400 && status < 500) {
      return reply.status(status).send({ error: (error as Error).message });
    }
    request.log.error({ err: error }, 'request failed');
    return reply.status(500).send({ error: 'internal error' });
  });
  app.setNotFoundHandler((request, reply) =>
    reply.status(404).send({ error: `no route ${request.method} ${request.url.split('?')[0] ?? ''}` }),
  );

  // Every call that reaches Temporal or the database runs in an admission slot.
  const admission = new Admission(settings.admission);
  metrics.watchAdmission(admission);
  const admitted = <T>(work: () => Promise<T>): Promise<T> => admission.run(work);
  // A flood is refused before its bodies are parsed; probes and metrics are never refused.
  const unlimited = new Set(['/healthz', '/readyz', '/metrics', '/openapi.json']);
  app.addHook('onRequest', (request, _reply, done) => {
    done(unlimited.has(request.routeOptions.url ?? '') ? undefined : admission.refuseEarly());
  });

  /**
   * Temporal calls are bounded by the deadline; see errors.ts for what each failure answers.
   * `signal`: the call delivers a signal, whose fate is unknown when the deadline passes.
   */
  async function temporal<T>(
    work: () => Promise<T>,
    what: { signal: boolean; timeoutMs?: number } = { signal: false },
  ): Promise<T> {
    try {
      return await client.withDeadline(Date.now() + (what.timeoutMs ?? settings.temporalTimeoutMs), work);
    } catch (err) {
      throw temporalFailure(err, what);
    }
  }
  const signal = { signal: true };
  // Workflows this API starts get the configured lifecycle overrides, if any.
  const lifecycle = Object.keys(settings.lifecycle).length > 0 ? { config: settings.lifecycle } : {};

  /**
   * The workflow's state query. A query is answered by a worker running the workflow, so one
   * that does not answer in time has two causes, told apart by a describe: the workflow's tasks
   * are failing (502, Temporal answered; the Web UI shows why), or Temporal or the workers are
   * not answering (503).
   */
  async function queryState(id: string): Promise<WorkspaceState> {
    const handle = client.workflow.getHandle(workspaceWorkflowId(id));
    try {
      return await temporal(() => handle.query(stateQuery));
    } catch (err) {
      if (!(err instanceof HttpError) || err.statusCode !== 503) throw err;
      const failing = await client
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

  /** Store calls fail closed: an unreachable database is 503, never a pass. */
  async function db<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      throw databaseFailure(err);
    }
  }

  /** A plugin set the reconcile would refuse is a 400 naming each bad source. */
  function checkPluginSources(plugins: { name: string; source: string }[], field: string): void {
    const issues = validatePluginSources(plugins, settings.sources, field);
    if (issues.length > 0) throw badRequest('invalid plugin sources', issues);
  }

  /** 404 unless the workspace exists and is not removed; returns its live-token count. */
  async function requireLiveWorkspace(id: string): Promise<number> {
    const access = await db(() => store.workspaceAccess(id));
    if (access === null) throw new HttpError(404, `unknown workspace ${id}`);
    if (access.status === 'removed') throw new HttpError(404, `workspace ${id} is removed`);
    return access.liveTokens;
  }

  async function requireRuntime(request: FastifyRequest, id: string, call: RuntimeCall): Promise<void> {
    const liveTokens = await requireLiveWorkspace(id);
    const outcome = await db(() => authorizeRuntime(store, id, call, request.headers.authorization, liveTokens));
    if (!outcome.ok) throw new HttpError(outcome.status, outcome.reason);
  }

  function requireAdmin(request: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void): void {
    done(
      isAdmin(request.headers.authorization, settings.adminToken)
        ? undefined
        : new HttpError(401, 'admin token required'),
    );
  }

  // --- runtime endpoints (wire-compatible with the reference runtime) --------------------------

  app.post(
    '/registry/register',
    {
      schema: {
        summary: 'A runtime registers; relayed as the `register` signal',
        security: [{ bearer: [] }],
        body: registerPayloadSchema,
        response: {
          200: z.object({
            status: z.literal('registered'),
            delivery_mode: z.enum(['push', 'poll']),
            auth_token: z.string().optional(),
          }),
          ...errors(400, 401, 403, 404, 429, 502, 503),
        },
      },
    },
    async (request) =>
      admitted(async () => {
        const body = request.body;
        await requireRuntime(request, body.id, 'register');
        // Effective delivery mode as the workflow computes it: the payload's, else the stored one, else push.
        const stored = body.delivery_mode === undefined ? (await queryState(body.id)).deliveryMode : null;
        const deliveryMode = body.delivery_mode ?? stored ?? 'push';
        if (deliveryMode === 'push') {
          const field = body.url ? 'body.url' : 'body.agent_card.url';
          const url = body.url || body.agent_card.url || '';
          if (url === '')
            throw badRequest('url is required for push-mode workspaces', [
              { field: 'body.url', problem: 'is required in push mode (set url or agent_card.url)' },
            ]);
          const reason = await unsafeUrlReason(url, settings.urlPolicy);
          if (reason !== null) throw badRequest(`unsafe ${field}`, [{ field, problem: reason }]);
        }
        await temporal(
          () =>
            relayRuntimeSignal(client, body.id, 'register', body, { taskQueue: settings.taskQueue, start: lifecycle }),
          signal,
        );
        const token = await db(() => mintTokenIfNone(store, body.id));
        return { status: 'registered' as const, delivery_mode: deliveryMode, ...(token ? { auth_token: token } : {}) };
      }),
  );

  app.post(
    '/registry/heartbeat',
    {
      schema: {
        summary: 'A runtime heartbeats; relayed as the `heartbeat` signal',
        security: [{ bearer: [] }],
        body: heartbeatPayloadSchema,
        response: {
          200: z.object({ status: z.literal('ok') }),
          ...errors(400, 401, 403, 404, 429, 502, 503),
        },
      },
    },
    async (request) =>
      admitted(async () => {
        const id = request.body.workspace_id;
        await requireRuntime(request, id, 'heartbeat');
        await temporal(
          () =>
            relayRuntimeSignal(client, id, 'heartbeat', request.body, {
              taskQueue: settings.taskQueue,
              start: lifecycle,
            }),
          signal,
        );
        return { status: 'ok' as const };
      }),
  );

  // --- workspace management (admin) ------------------------------------------------------------

  await app.register((admin, _options, done) => {
    const scoped = admin.withTypeProvider<ZodTypeProvider>();
    scoped.addHook('onRequest', requireAdmin);

    scoped.post(
      '/workspaces',
      {
        schema: {
          summary: 'Create a workspace with its declared plugins; its workflow starts in provisioning',
          security: [{ bearer: [] }],
          body: z.strictObject({
            id: workspaceId,
            plugins: declaredPluginsSchema.default([]),
            initial_status: z.enum(['provisioning', 'awaiting_agent']).default('provisioning'),
          }),
          response: {
            201: z.object({
              id: z.string(),
              status: z.string(),
              plugins: declaredPluginsSchema,
              auth_token: z.string(),
            }),
            ...errors(400, 401, 409, 429, 502, 503),
          },
        },
      },
      async (request, reply) =>
        admitted(async () => {
          const { id, plugins, initial_status: initialStatus } = request.body;
          checkPluginSources(plugins, 'body.plugins');
          if (!(await db(() => store.createWorkspace(id, plugins))))
            throw new HttpError(409, `workspace ${id} already exists`);
          await temporal(() =>
            client.workflow.start('workspaceWorkflow', {
              taskQueue: settings.taskQueue,
              workflowId: workspaceWorkflowId(id),
              args: [{ workspaceId: id, initialStatus, ...lifecycle }],
              workflowIdReusePolicy: 'REJECT_DUPLICATE',
              ...workspaceStartMetadata(
                id,
                initialStatus,
                plugins.map((plugin) => plugin.name),
              ),
            }),
          );
          const token = await db(() => mintTokenIfNone(store, id));
          if (token === null) throw new HttpError(409, `workspace ${id} already has a token`);
          return reply.status(201).send({ id, status: initialStatus, plugins, auth_token: token });
        }),
    );

    scoped.get(
      '/workspaces',
      {
        schema: {
          summary: 'List workspaces from the SQL projection, optionally by status',
          security: [{ bearer: [] }],
          querystring: z.strictObject({
            status: z.enum(statuses).optional(),
            limit: z.coerce.number().int().min(1).max(1000).default(100),
          }),
          response: {
            200: z.object({
              workspaces: z.array(
                z.object({ id: z.string(), status: z.string(), url: z.string().nullable(), status_since: z.string() }),
              ),
            }),
            ...errors(400, 401, 429, 503),
          },
        },
      },
      async (request) =>
        admitted(async () => {
          const rows = await db(() => store.listWorkspaces(request.query.status, request.query.limit));
          return {
            workspaces: rows.map((row) => ({
              id: row.workspaceId,
              status: row.status,
              url: row.url,
              status_since: row.statusSince,
            })),
          };
        }),
    );

    scoped.get(
      '/workspaces/:id',
      {
        schema: {
          summary: "The workflow's `state` query",
          security: [{ bearer: [] }],
          params: idParams,
          response: {
            200: z.record(z.string(), z.unknown()),
            ...errors(400, 401, 404, 429, 502, 503),
          },
        },
      },
      async (request) =>
        admitted(async () => {
          const id = request.params.id;
          if ((await db(() => store.workspaceAccess(id))) === null) throw new HttpError(404, `unknown workspace ${id}`);
          const state = await queryState(id);
          return state as unknown as Record<string, unknown>;
        }),
    );

    scoped.put(
      '/workspaces/:id/plugins',
      {
        schema: {
          summary: 'Replace the declared plugin set; a live workspace reconciles',
          security: [{ bearer: [] }],
          params: idParams,
          body: z.strictObject({ plugins: declaredPluginsSchema }),
          response: {
            202: z.object({ status: z.literal('declared'), plugins: declaredPluginsSchema }),
            ...errors(400, 401, 404, 429, 502, 503),
          },
        },
      },
      async (request, reply) =>
        admitted(async () => {
          const id = request.params.id;
          const { plugins } = request.body;
          checkPluginSources(plugins, 'body.plugins');
          await requireLiveWorkspace(id);
          await db(() => store.setDeclaredPlugins(id, plugins));
          await temporal(() => client.workflow.getHandle(workspaceWorkflowId(id)).signal(declarePluginsSignal), signal);
          return reply.status(202).send({ status: 'declared' as const, plugins });
        }),
    );

    scoped.post(
      '/workspaces/:id/restart',
      {
        schema: {
          summary: 'Operator restart; opens the settle window',
          security: [{ bearer: [] }],
          params: idParams,
          body: z.strictObject({ reason: z.string().min(1).max(500).optional() }).default({}),
          response: {
            202: z.object({ status: z.literal('restart requested') }),
            ...errors(400, 401, 404, 429, 502, 503),
          },
        },
      },
      async (request, reply) =>
        admitted(async () => {
          const id = request.params.id;
          await requireLiveWorkspace(id);
          const reason = request.body.reason ?? 'operator request';
          await temporal(
            () =>
              client.workflow
                .getHandle(workspaceWorkflowId(id))
                .signal(restartSignal, { reason, requester: 'operator' }),
            signal,
          );
          return reply.status(202).send({ status: 'restart requested' as const });
        }),
    );

    scoped.post(
      '/workspaces/:id/dispatch-failed',
      {
        schema: {
          summary: 'A caller could not reach the box: the dead-detection verdict',
          security: [{ bearer: [] }],
          params: idParams,
          body: z
            .strictObject({ caller: z.string().min(1).max(200).optional(), error: z.string().max(2000).optional() })
            .default({}),
          response: {
            200: z.object({ verdict: z.literal('alive'), detail: z.string() }),
            202: z.object({ verdict: z.literal('queued'), detail: z.string() }),
            503: z.union([z.object({ verdict: z.enum(['dead', 'restarting']), detail: z.string() }), errorBody]),
            ...errors(400, 401, 404, 429, 502),
          },
        },
      },
      async (request, reply) => {
        const id = request.params.id;
        await admitted(() => requireLiveWorkspace(id));
        const handle = client.workflow.getHandle(workspaceWorkflowId(id));
        // The evaluation can wait up to ~3 s (fresh heartbeat, re-probe), beyond the usual bound;
        // it holds no admission slot while it waits.
        const result = await temporal(
          () =>
            handle.executeUpdate(dispatchFailedUpdate, { args: [request.body] }).catch((err: unknown) => {
              // The update's validator refuses a removed workspace.
              if (err instanceof WorkflowUpdateFailedError) throw new HttpError(404, `workspace ${id} is removed`);
              throw err;
            }),
          { signal: false, timeoutMs: settings.temporalTimeoutMs + 10_000 },
        );
        switch (result.verdict) {
          case 'alive':
            return reply.status(200).send({ verdict: 'alive' as const, detail: result.detail });
          case 'queued':
            return reply
              .status(202)
              .header('Retry-After', '15')
              .send({ verdict: 'queued' as const, detail: result.detail });
          default:
            return reply
              .status(503)
              .header('Retry-After', '15')
              .send({ verdict: result.verdict, detail: result.detail });
        }
      },
    );

    scoped.delete(
      '/workspaces/:id',
      {
        schema: {
          summary: 'Deprovision: the workspace becomes removed and its workflow completes',
          security: [{ bearer: [] }],
          params: idParams,
          response: {
            202: z.object({ status: z.literal('removing') }),
            ...errors(400, 401, 404, 429, 502, 503),
          },
        },
      },
      async (request, reply) =>
        admitted(async () => {
          const id = request.params.id;
          await requireLiveWorkspace(id);
          await temporal(() => client.workflow.getHandle(workspaceWorkflowId(id)).signal(deprovisionSignal), signal);
          // From this answer on, every call for the workspace is 404, before the workflow has
          // written its `removed` projection.
          await db(() => store.markRemoved(id));
          return reply.status(202).send({ status: 'removing' as const });
        }),
    );
    done();
  });

  // --- operations ------------------------------------------------------------------------------

  app.get(
    '/healthz',
    { schema: { summary: 'The process is up', response: { 200: z.object({ status: z.literal('ok') }) } } },
    () => ({
      status: 'ok' as const,
    }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        summary: 'Temporal and PostgreSQL are reachable',
        response: {
          200: z.object({ temporal: z.string(), database: z.string() }),
          503: z.object({ temporal: z.string(), database: z.string() }),
        },
      },
    },
    async (_request, reply) => {
      const check = async (work: () => Promise<unknown>): Promise<string> =>
        work().then(
          () => 'ok',
          (err: unknown) => `unavailable: ${(err as Error).message}`,
        );
      const [temporalStatus, database] = await Promise.all([
        check(() => client.withDeadline(Date.now() + 2_000, () => client.workflowService.getSystemInfo({}))),
        check(() => store.ping()),
      ]);
      const ready = temporalStatus === 'ok' && database === 'ok';
      if (!ready) void reply.header('Retry-After', String(DEPENDENCY_RETRY_AFTER_SECONDS));
      return reply.status(ready ? 200 : 503).send({ temporal: temporalStatus, database });
    },
  );

  app.get('/metrics', { schema: { summary: 'Prometheus metrics', hide: true } }, async (_request, reply) =>
    reply.header('Content-Type', metrics.contentType).send(await metrics.render()),
  );

  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());

  return app;
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
