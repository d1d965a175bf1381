/**
 * Workspace management, for operators and the platform: create, list, read, declare plugins,
 * reconcile them (verify, refresh), restart, report a failed dispatch (the dead-detection verdict) and deprovision. Every route
 * here takes the admin token.
 */
import { WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import type { FastifyReply } from 'fastify';
import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import {
  cordonUpdate,
  declarePluginsSignal,
  deprovisionSignal,
  dispatchFailedUpdate,
  reconcileUpdate,
  restartUpdate,
  uncordonUpdate,
  workspaceWorkflowId,
} from '../../workflows/definitions.js';
import { workspaceStartMetadata } from '../../workflows/operator-view.js';
import { safeText, workspaceIdSchema } from '../payload-schemas.js';
import { statuses, type CommandAnswer, type WorkspaceState } from '../../workflows/state-machine.js';
import type { HeartbeatLedger } from '../../db/tables/heartbeat-ledger.js';
import { SIGNAL, type ApiContext } from '../context.js';
import { HttpError } from '../errors.js';
import {
  boxSettingsSchema,
  declaredPluginsSchema,
  errorBody,
  errors,
  idParams,
  type BoxSettingsBody,
} from '../schemas.js';
import { sshSettingsFromBody, sshSettingsToBody, storedSshSettings } from '../../activities/box/ssh-settings.js';
import { requireAdmin, newInstanceToken } from '../tokens.js';

/** What `GET /workspaces/:id` answers: the workflow's state, the heartbeat ledger's row and the box settings. */
export type WorkspaceView = WorkspaceState & {
  heartbeatLedger: HeartbeatLedger;
  /** Whether a boot credential from the last restart awaits a register (never its value). */
  bootCredentialPending: boolean;
  box: BoxSettingsBody;
};

/** The stored form (the driver's field names); null for the default driver. */
function storedBox(body: BoxSettingsBody): object | null {
  return body.driver === 'local' ? null : { driver: 'ssh', ...sshSettingsFromBody(body) };
}

/** The API's form of what is stored (unreadable settings show as the default driver's). */
function boxBody(stored: unknown): BoxSettingsBody {
  const parsed = storedSshSettings(stored);
  return parsed === null || typeof parsed === 'string' ? { driver: 'local' } : sshSettingsToBody(parsed);
}

/** An operator's reason for a restart or a cordon, shown in the state and the UI. */
const reasonBody = z.strictObject({ reason: safeText(z.string().min(1).max(500)).optional() }).default({});

/** An operator command's answer: 200 when started or merged into one in flight, 409 when refused. */
const commandAnswers = {
  200: z.object({ outcome: z.enum(['started', 'merged']), detail: z.string() }),
  409: z.union([z.object({ outcome: z.literal('refused'), detail: z.string() }), errorBody]),
};

export const workspaceRoutes: FastifyPluginCallbackZod<{ ctx: ApiContext }> = (app, { ctx }, done) => {
  const { client, store, settings } = ctx;

  /** A live workspace whose box the service runs; 409 naming `instead` for an external runtime. */
  async function requireManagedWorkspace(id: string, instead: string): Promise<void> {
    const access = await ctx.requireLiveWorkspace(id);
    if (access.external) throw new HttpError(409, `workspace ${id} runs an external runtime: ${instead}`);
  }

  /**
   * Sends an operator command (an Update) and answers what the workflow did with it. Its fate is
   * unknown when the deadline passes, as a signal's: retrying merges into what it started.
   */
  async function command(reply: FastifyReply, send: () => Promise<CommandAnswer>): Promise<FastifyReply> {
    const answer = await ctx.temporal(send, SIGNAL);
    return reply.status(answer.outcome === 'refused' ? 409 : 200).send(answer);
  }

  // Every route of this plugin, and only these, take the admin token.
  app.addHook('onRequest', requireAdmin(settings.adminToken));

  app.post(
    '/workspaces',
    {
      schema: {
        summary:
          'Create a workspace with its declared plugins; its workflow starts in provisioning, or in awaiting_agent for a runtime run outside the service',
        security: [{ bearer: [] }],
        body: z.strictObject({
          id: workspaceIdSchema,
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
      ctx.admitted(async () => {
        const { id, plugins, initial_status: initialStatus } = request.body;
        await ctx.checkPluginSources(plugins, 'body.plugins');
        const external = initialStatus === 'awaiting_agent';
        // The row, its plugins and its token in one statement, before the workflow exists: no
        // register can find the workspace without its token already live.
        const { token, stored } = newInstanceToken();
        if (!(await ctx.db(() => store.workspaces.create(id, plugins, external, stored))))
          throw new HttpError(409, `workspace ${id} already exists`);
        await ctx.temporal(() =>
          client.workflow.start('workspaceWorkflow', {
            taskQueue: settings.taskQueue,
            workflowId: workspaceWorkflowId(id),
            args: [ctx.startInput(id, external)],
            workflowIdReusePolicy: 'REJECT_DUPLICATE',
            ...workspaceStartMetadata(
              id,
              initialStatus,
              plugins.map((plugin) => plugin.name),
            ),
          }),
        );
        return reply.status(201).send({ id, status: initialStatus, plugins, auth_token: token });
      }),
  );

  app.get(
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
      ctx.admitted(async () => {
        const rows = await ctx.db(() => store.workspaces.list(request.query.status, request.query.limit));
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

  app.get(
    '/workspaces/:id',
    {
      schema: {
        summary:
          "The workflow's `state` query, with `heartbeatLedger`: the last heartbeat the API recorded, how many it recorded, and the liveness contract the workflow published, and `bootCredentialPending`: whether a boot credential awaits a register",
        security: [{ bearer: [] }],
        params: idParams,
        response: {
          200: z.record(z.string(), z.unknown()),
          ...errors(400, 401, 404, 429, 502, 503),
        },
      },
    },
    async (request) =>
      ctx.admitted(async () => {
        const id = request.params.id;
        if ((await ctx.db(() => store.workspaces.access(id))) === null)
          throw new HttpError(404, `unknown workspace ${id}`);
        const [state, heartbeatLedger, bootCredential, box] = await Promise.all([
          ctx.queryState(id),
          ctx.db(() => store.heartbeats.read(id)),
          ctx.db(() => store.bootCredentials.hash(id)),
          ctx.db(() => store.boxSettings.read(id)),
        ]);
        const view: WorkspaceView = {
          ...state,
          heartbeatLedger,
          bootCredentialPending: bootCredential !== null,
          box: boxBody(box),
        };
        return view as unknown as Record<string, unknown>;
      }),
  );

  app.put(
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
      ctx.admitted(async () => {
        const id = request.params.id;
        const { plugins } = request.body;
        await ctx.checkPluginSources(plugins, 'body.plugins');
        await ctx.requireLiveWorkspace(id);
        await ctx.db(() => store.declaredPlugins.set(id, plugins));
        await ctx.temporal(() => ctx.handle(id).signal(declarePluginsSignal), SIGNAL);
        return reply.status(202).send({ status: 'declared' as const, plugins });
      }),
  );

  app.put(
    '/workspaces/:id/box',
    {
      schema: {
        summary:
          "How the worker reaches the workspace's box: `local` (the default driver) or `ssh` with a pinned host key; used from the next box operation on",
        security: [{ bearer: [] }],
        params: idParams,
        body: boxSettingsSchema,
        response: {
          200: z.object({ status: z.literal('box set'), box: boxSettingsSchema }),
          ...errors(400, 401, 404, 409, 429, 503),
        },
      },
    },
    async (request) =>
      ctx.admitted(async () => {
        const id = request.params.id;
        await requireManagedWorkspace(id, 'the service does not reach its box');
        const box = request.body;
        if (!(await ctx.db(() => store.boxSettings.set(id, storedBox(box)))))
          throw new HttpError(404, `unknown workspace ${id}`);
        return { status: 'box set' as const, box };
      }),
  );

  app.post(
    '/workspaces/:id/reconcile',
    {
      schema: {
        summary:
          'Reconcile the declared plugins now and verify the tracked ones on the box; with refresh, deliver newer revisions of their sources (one restart)',
        security: [{ bearer: [] }],
        params: idParams,
        body: z.strictObject({ refresh: z.boolean().optional() }).default({}),
        response: { ...errors(400, 401, 404, 429, 502, 503), ...commandAnswers },
      },
    },
    async (request, reply) =>
      ctx.admitted(async () => {
        const id = request.params.id;
        await requireManagedWorkspace(id, 'it loads its own plugins');
        const refresh = request.body.refresh === true;
        return command(reply, () =>
          ctx.handle(id).executeUpdate(reconcileUpdate, { args: [{ refresh, requester: 'operator' }] }),
        );
      }),
  );

  // The operator commands that take a reason: a restart (never held by a cordon, a crash-loop
  // backoff or a drain) and a cordon.
  for (const { path, summary, instead, update, reason } of [
    {
      path: '/workspaces/:id/restart',
      summary:
        'Operator restart, never held by a cordon, a crash-loop backoff or a drain; opens the settle window. Answers started, merged into the restart in flight, or refused (409)',
      instead: 'restart it where it runs',
      update: restartUpdate,
      reason: 'operator request',
    },
    {
      path: '/workspaces/:id/cordon',
      summary:
        'Hold the workspace: nothing automatic restarts it or delivers plugins to it until uncordon (verdicts are still made). Answers started, merged (already cordoned), or refused (409)',
      instead: 'the service neither restarts nor delivers to it',
      update: cordonUpdate,
      reason: 'operator hold',
    },
  ])
    app.post(
      path,
      {
        schema: {
          summary,
          security: [{ bearer: [] }],
          params: idParams,
          body: reasonBody,
          response: { ...errors(400, 401, 404, 429, 502, 503), ...commandAnswers },
        },
      },
      async (request, reply) =>
        ctx.admitted(async () => {
          const id = request.params.id;
          await requireManagedWorkspace(id, instead);
          const args: [{ reason: string; requester: string }] = [
            { reason: request.body.reason ?? reason, requester: 'operator' },
          ];
          return command(reply, () => ctx.handle(id).executeUpdate(update, { args }));
        }),
    );

  app.post(
    '/workspaces/:id/uncordon',
    {
      schema: {
        summary:
          'End the hold: the restart and the reconcile pass it held run once. Answers started, merged (not cordoned), or refused (409)',
        security: [{ bearer: [] }],
        params: idParams,
        response: { ...errors(400, 401, 404, 429, 502, 503), ...commandAnswers },
      },
    },
    async (request, reply) =>
      ctx.admitted(async () => {
        const id = request.params.id;
        await ctx.requireLiveWorkspace(id);
        return command(reply, () =>
          ctx.handle(id).executeUpdate(uncordonUpdate, { args: [{ requester: 'operator' }] }),
        );
      }),
  );

  app.post(
    '/workspaces/:id/dispatch-failed',
    {
      schema: {
        summary: 'A caller could not reach the box: the dead-detection verdict',
        security: [{ bearer: [] }],
        params: idParams,
        body: z
          .strictObject({
            caller: safeText(z.string().min(1).max(200)).optional(),
            // The caller's own words for what failed: free text, never stored nor shown.
            error: z.string().max(2000).optional(),
          })
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
      await ctx.admitted(() => ctx.requireLiveWorkspace(id));
      const handle = ctx.handle(id);
      // The evaluation can wait up to ~3 s (fresh heartbeat, re-probe), beyond the usual bound;
      // it holds no admission slot while it waits.
      const result = await ctx.temporal(
        () =>
          handle.executeUpdate(dispatchFailedUpdate, { args: [request.body] }).catch((err: unknown) => {
            // The update's validator refuses a removed workspace; any other failure is the workflow's.
            if (err instanceof WorkflowUpdateFailedError && /workspace is removed/.test(String(err.cause?.message)))
              throw new HttpError(404, `workspace ${id} is removed`);
            if (err instanceof WorkflowUpdateFailedError)
              throw new HttpError(502, `the dead-detection evaluation failed: ${err.cause?.message ?? err.message}`);
            throw err;
          }),
        { signal: false, timeoutMs: settings.temporalTimeoutMs + 10_000 },
      );
      ctx.metrics.dispatchVerdict(result.verdict, result.strikes);
      switch (result.verdict) {
        case 'alive':
          return reply.status(200).send({ verdict: 'alive' as const, detail: result.detail });
        case 'queued':
          return reply
            .status(202)
            .header('Retry-After', '15')
            .send({ verdict: 'queued' as const, detail: result.detail });
        default:
          return reply.status(503).header('Retry-After', '15').send({ verdict: result.verdict, detail: result.detail });
      }
    },
  );

  app.delete(
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
      ctx.admitted(async () => {
        const id = request.params.id;
        await ctx.requireLiveWorkspace(id);
        await ctx.temporal(
          () =>
            ctx
              .handle(id)
              .signal(deprovisionSignal)
              // Already completed (a retried DELETE) or never started: nothing left to tell it.
              .catch((err: unknown) => {
                if (!(err instanceof WorkflowNotFoundError)) throw err;
              }),
          SIGNAL,
        );
        // From this answer on, every call for the workspace is 404, before the workflow has
        // written its `removed` projection.
        await ctx.db(() => store.workspaces.markRemoved(id));
        return reply.status(202).send({ status: 'removing' as const });
      }),
  );
  done();
};
