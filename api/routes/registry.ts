/**
 * The runtime's two calls, wire-compatible with the runtimes already deployed (a register after
 * a revocation also needs the X-Boot-Credential header; see api/tokens.ts): register and
 * heartbeat, relayed to the workspace's workflow as signals (signal-with-start). A heartbeat is
 * one statement (Store.recordHeartbeat): recorded in the heartbeat ledger, and relayed only when
 * the workflow's published liveness contract wants it, answered once the workflow has it
 * (docs/heartbeats.md).
 * Auth: the workspace's instance token, or for a register while it has none the boot credential
 * its box was started with (api/tokens.ts), checked before anything about the workspace is read.
 */
import type { FastifyRequest } from 'fastify';
import type { FastifyRouteSchemaDef } from 'fastify/types/schema.js';
import { serializerCompiler, type FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { effectiveDeliveryMode, registerUrl, withRegisterUrl } from '../../workflows/payloads.js';
import { heartbeatPayloadSchema, heartbeatValidatorCompiler, registerPayloadSchema } from '../payload-schemas.js';
import { heartbeatFacts, type HeartbeatFacts } from '../../workflows/state-machine.js';
import type { HeartbeatRecord } from '../../db/tables/heartbeat-ledger.js';
import type { WorkspaceAccess } from '../../db/tables/workspaces.js';
import { SIGNAL, type ApiContext } from '../context.js';
import { HttpError, badRequest } from '../errors.js';
import { relayRuntimeSignal } from '../relay.js';
import { errors } from '../schemas.js';
import { hashSecret } from '../../db/secrets.js';
import {
  authorizeRuntime,
  bearerToken,
  BOOT_CREDENTIAL_HEADER,
  LIVE_TOKEN_EXISTS,
  mintTokenIfNone,
  mintTokenWithBootCredential,
  UNAUTHENTICATED,
  WRONG_BOOT_CREDENTIAL,
  type RuntimeCall,
} from '../tokens.js';

/** The register route: served in a relay slot, and refused early by the relay slots' load (server.ts). */
export const REGISTER_PATH = '/registry/register';

/**
 * The heartbeat's answers: its 200 is `{status: 'ok'}` and nothing else (the route's type says
 * so), written as it is instead of encoded through its schema on the API's busiest route; every
 * other answer goes through its schema as on every route.
 */
function heartbeatSerializerCompiler<S>(route: FastifyRouteSchemaDef<S>): (data: unknown) => string {
  if (route.httpStatus === '200') return (data) => JSON.stringify(data);
  // Fastify compiles each answer with that answer's schema: a zod schema.
  return serializerCompiler(route as FastifyRouteSchemaDef<unknown> as Parameters<typeof serializerCompiler>[0]);
}

export const registryRoutes: FastifyPluginCallbackZod<{ ctx: ApiContext }> = (app, { ctx }, done) => {
  const { client, store, settings } = ctx;

  /**
   * Authenticates the call from its credentials alone (api/tokens.ts), then reads the workspace:
   * only an authenticated caller learns whether it exists, is removed or has a live token. Returns
   * its access row, and the hash of the boot credential when one let a register in.
   */
  async function requireRuntime(
    request: FastifyRequest,
    id: string,
    call: RuntimeCall,
  ): Promise<{ access: WorkspaceAccess; bootCredential?: Buffer; trustOnFirstUse?: true }> {
    const credentials = {
      authorization: request.headers.authorization,
      bootCredential: request.headers[BOOT_CREDENTIAL_HEADER],
    };
    const outcome = await ctx.db(() =>
      authorizeRuntime(store, id, call, credentials, settings.bootstrapWithoutCredential),
    );
    if (!outcome.ok) {
      if (outcome.reason === WRONG_BOOT_CREDENTIAL) ctx.metrics.bootCredentialRefused('wrong_or_used');
      // The holder of a revoked token of this workspace had its token: it is told a removal, so its runtime stops.
      if (outcome.revokedOwnToken) await ctx.requireLiveWorkspace(id);
      throw new HttpError(outcome.status, outcome.reason);
    }
    if (outcome.trustOnFirstUse) {
      // Anonymous: any workspace it may not bootstrap gets the answer an unknown one gets.
      const access = await ctx.db(() => store.workspaces.access(id));
      if (access === null || access.status === 'removed' || access.liveTokens > 0)
        throw new HttpError(401, UNAUTHENTICATED);
      request.log.warn(
        { workspaceId: id },
        'register without a boot credential let in (WL_BOOTSTRAP_WITHOUT_CREDENTIAL)',
      );
      return { access, trustOnFirstUse: true };
    }
    const access = await ctx.requireLiveWorkspace(id);
    if (outcome.bootCredential === undefined) return { access };
    if (access.liveTokens > 0) {
      ctx.metrics.bootCredentialRefused('live_token_exists');
      throw new HttpError(401, LIVE_TOKEN_EXISTS);
    }
    return { access, bootCredential: outcome.bootCredential };
  }

  /**
   * One statement for a heartbeat with a live token of its live workspace: checks both, says
   * whether the workflow wants it, and records it unless it is wanted. Anything else goes the
   * long way (requireRuntime), which gives the exact answer: 401 or 403 from the credentials
   * alone, then 404 for its own removed workspace; a workspace made without a ledger row gets one.
   */
  async function recordHeartbeat(request: FastifyRequest, id: string, beat: HeartbeatFacts): Promise<HeartbeatRecord> {
    const bearer = bearerToken(request.headers.authorization);
    const record = (): Promise<HeartbeatRecord | null> =>
      bearer === undefined
        ? Promise.resolve(null)
        : ctx.db(() => store.heartbeats.record(hashSecret(bearer), id, beat));
    const first = await record();
    if (first !== null) return first;
    await requireRuntime(request, id, 'heartbeat');
    // Authorized after all: the token or the workspace changed between the two reads, or the
    // workspace has no ledger row yet.
    await ctx.db(() => store.heartbeats.ensureRow(id));
    const second = await record();
    if (second !== null) return second;
    throw new HttpError(401, 'invalid token');
  }

  app.post(
    REGISTER_PATH,
    {
      schema: {
        summary: 'A runtime registers; relayed as the `register` signal',
        description:
          'With the instance token, or while the workspace has no live token with the one-time boot credential its box was started with (X-Boot-Credential), which mints the new token.',
        security: [{ bearer: [] }, { bootCredential: [] }],
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
    // A register waits on its signal: it is served in a relay slot (api/admission.ts).
    async (request) =>
      ctx.relayed(async () => {
        const body = request.body;
        const { access, bootCredential, trustOnFirstUse } = await requireRuntime(request, body.id, 'register');
        // The workflow's rule decides the mode, over the mode it last projected (no worker needed):
        // push mode needs a URL. A workspace projected by a run from before the mode was projected
        // has none stored: the workflow itself says (that needs a worker).
        const unknown = body.delivery_mode === undefined && access.deliveryMode === null && access.projected;
        const stored = unknown ? (await ctx.queryState(body.id)).deliveryMode : access.deliveryMode;
        const deliveryMode = effectiveDeliveryMode(body.delivery_mode, stored, access.external);
        // The URL the workflow will store, whatever the mode, passes the URL guard, and the
        // workflow is given the normalised form the guard checked: one spelling, parsed once.
        const { url, field } = registerUrl(body);
        if (deliveryMode === 'push' && url === '')
          throw badRequest('url is required for push-mode workspaces', [
            { field: 'body.url', problem: 'is required in push mode (set url or agent_card.url)' },
          ]);
        const register =
          url === '' ? body : withRegisterUrl(body, (await ctx.checkRuntimeUrl(url, `body.${field}`)).href);
        const relay = {
          taskQueue: settings.taskQueue,
          start: () => Promise.resolve(ctx.startInput(body.id, access.external)),
        };
        await ctx.temporal(() => relayRuntimeSignal(client, body.id, 'register', register, relay), SIGNAL);
        // A live token let it in: none is minted. A boot credential did: it is consumed as the token
        // is minted, in one transaction, so of registers racing with it exactly one gets a token;
        // the others are 401 (their signals were relayed: they carried the credential too). Consumed
        // only now, so a register refused on the way (Temporal unavailable) can be retried with it.
        const token = trustOnFirstUse
          ? await ctx.db(() => mintTokenIfNone(store, body.id))
          : bootCredential === undefined
            ? null
            : await ctx.db(() => mintTokenWithBootCredential(store, body.id, bootCredential));
        if (bootCredential !== undefined && token === null) {
          ctx.metrics.bootCredentialRefused('lost_race');
          throw new HttpError(401, WRONG_BOOT_CREDENTIAL);
        }
        return { status: 'registered' as const, delivery_mode: deliveryMode, ...(token ? { auth_token: token } : {}) };
      }),
  );

  app.post(
    '/registry/heartbeat',
    {
      schema: {
        summary:
          'A runtime heartbeats; recorded in the heartbeat ledger, relayed as the `heartbeat` signal when the workflow wants it',
        security: [{ bearer: [] }],
        body: heartbeatPayloadSchema,
        response: {
          200: z.object({ status: z.literal('ok') }),
          ...errors(400, 401, 403, 404, 429, 502, 503),
        },
      },
      validatorCompiler: heartbeatValidatorCompiler,
      serializerCompiler: heartbeatSerializerCompiler,
    },
    async (request) => {
      const beat = request.body;
      const id = beat.workspace_id;
      const recorded = await ctx.admitted(() => recordHeartbeat(request, id, heartbeatFacts(beat)));
      // Not wanted: recorded in the ledger, where every liveness rule reads it.
      if (!recorded.wanted) return { status: 'ok' as const };
      // Wanted: relayed in a relay slot, answered once the workflow has it, then recorded. Not
      // delivered (503), or no relay slot (429): nothing is recorded, and the runtime's retry is
      // wanted again.
      // No run open (terminated): the one that starts is what the database says the workspace is.
      const relay = {
        taskQueue: settings.taskQueue,
        start: async () => ctx.startInput(id, (await ctx.requireLiveWorkspace(id)).external),
      };
      return ctx.relayed(async () => {
        await ctx.temporal(() => relayRuntimeSignal(client, id, 'heartbeat', beat, relay), SIGNAL);
        await ctx.db(() => store.heartbeats.delivered(id, recorded.wantVersion));
        return { status: 'ok' as const };
      });
    },
  );

  done();
};
