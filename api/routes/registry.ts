/**
 * The runtime's two calls, wire-compatible with the runtimes already deployed: register and
 * heartbeat, each relayed to the workspace's workflow as a signal (signal-with-start).
 * Auth: the workspace's instance token, or none for a register in bootstrap (api/tokens.ts).
 */
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import {
  effectiveDeliveryMode,
  heartbeatPayloadSchema,
  registerPayloadSchema,
  registerUrl,
} from '../../workflows/payloads.js';
import type { WorkspaceAccess } from '../../db/store.js';
import { SIGNAL, type ApiContext } from '../context.js';
import { HttpError, badRequest } from '../errors.js';
import { relayRuntimeSignal } from '../relay.js';
import { errors } from '../schemas.js';
import { unsafeUrlReason } from '../ssrf.js';
import { authorizeRuntime, mintTokenIfNone, type RuntimeCall } from '../tokens.js';

export const registryRoutes: FastifyPluginCallbackZod<{ ctx: ApiContext }> = (app, { ctx }, done) => {
  const { client, store, settings } = ctx;
  const relayOptions = { taskQueue: settings.taskQueue, start: ctx.startInput };

  async function requireRuntime(request: FastifyRequest, id: string, call: RuntimeCall): Promise<WorkspaceAccess> {
    const access = await ctx.requireLiveWorkspace(id);
    const outcome = await ctx.db(() =>
      authorizeRuntime(store, id, call, request.headers.authorization, access.liveTokens),
    );
    if (!outcome.ok) throw new HttpError(outcome.status, outcome.reason);
    return access;
  }

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
      ctx.admitted(async () => {
        const body = request.body;
        const access = await requireRuntime(request, body.id, 'register');
        // The workflow's rule decides the mode, over the mode it last projected (no worker needed);
        // the API checks the URL that mode needs. A workspace projected by a run from before the
        // mode was projected has none stored: the workflow itself says (that needs a worker).
        const unknown = body.delivery_mode === undefined && access.deliveryMode === null && access.projected;
        const stored = unknown ? (await ctx.queryState(body.id)).deliveryMode : access.deliveryMode;
        const deliveryMode = effectiveDeliveryMode(body.delivery_mode, stored, access.external);
        if (deliveryMode === 'push') {
          const { url, field } = registerUrl(body);
          if (url === '')
            throw badRequest('url is required for push-mode workspaces', [
              { field: 'body.url', problem: 'is required in push mode (set url or agent_card.url)' },
            ]);
          const reason = await unsafeUrlReason(url, settings.urlPolicy);
          if (reason !== null) throw badRequest(`unsafe body.${field}`, [{ field: `body.${field}`, problem: reason }]);
        }
        await ctx.temporal(() => relayRuntimeSignal(client, body.id, 'register', body, relayOptions), SIGNAL);
        const token = await ctx.db(() => mintTokenIfNone(store, body.id));
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
      ctx.admitted(async () => {
        const id = request.body.workspace_id;
        await requireRuntime(request, id, 'heartbeat');
        await ctx.temporal(() => relayRuntimeSignal(client, id, 'heartbeat', request.body, relayOptions), SIGNAL);
        return { status: 'ok' as const };
      }),
  );

  done();
};
