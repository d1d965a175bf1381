/**
 * The thin HTTP API, composed here: Fastify with zod validation and the OpenAPI document, the
 * error mapping, metrics, admission control, and one route plugin per resource (registry,
 * workspaces, fleet, operations). It authenticates and validates each call, relays it to the
 * workspace's workflow, and answers fast. It holds no lifecycle logic: statuses, reconciles,
 * restarts and verdicts are the workflow's. A signal that was not delivered is never answered
 * with 200.
 */
import type { Client } from '@temporalio/client';
import swagger from '@fastify/swagger';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import {
  hasZodFastifySchemaValidationErrors,
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { Store } from '../db/store.js';
import type { Tracing } from '../tracing.js';
import { ApiContext, type ApiSettings } from './context.js';
import { HttpError } from './errors.js';
import { eventRoutes } from './routes/events.js';
import { fleetRoutes, runningControllerState } from './routes/fleet.js';
import { traceRequests } from './tracing.js';
import { healthRoutes, operationsPaths } from './routes/health.js';
import { REGISTER_PATH, registryRoutes } from './routes/registry.js';
import { workspaceRoutes } from './routes/workspaces.js';

export { defaultApiSettings, type ApiSettings } from './context.js';

/** How long a scrape waits for the fleet liveness controller's state. */
const CONTROLLER_QUERY_MS = 2_000;

/** The longest path parameter the router hands to a route, percent-encoded. */
const MAX_PATH_PARAMETER = 512;

/** How the API is observed beyond its settings: traces, and where its log lines go (stdout by default). */
export interface ApiObservability {
  tracing?: Tracing | null;
  logStream?: { write: (line: string) => void };
}

export async function buildApi(
  client: Client,
  store: Store,
  settings: ApiSettings,
  observability: ApiObservability = {},
): Promise<FastifyInstance> {
  const app = Fastify({
    logger: {
      level: settings.logLevel,
      ...(observability.logStream === undefined ? {} : { stream: observability.logStream }),
    },
    bodyLimit: settings.bodyLimitBytes,
    // Room for any valid id (128 characters), so a long one reaches validation, which names it.
    routerOptions: { maxParamLength: MAX_PATH_PARAMETER },
    // What the router refuses before a route sees it (a path parameter whose percent-encoding is
    // not UTF-8, or longer than the room above) is a 400 naming the path, like every other 400.
    frameworkErrors: (error, _request, reply: FastifyReply) => {
      const problem =
        error.code === 'FST_ERR_MAX_PARAM_LENGTH'
          ? `a path parameter is longer than ${MAX_PATH_PARAMETER} characters`
          : 'a path parameter is not percent-encoded UTF-8';
      void reply.status(400).send({ error: 'invalid params', issues: [{ field: 'params', problem }] });
    },
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
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer' },
          bootCredential: { type: 'apiKey', in: 'header', name: 'X-Boot-Credential' },
        },
      },
    },
    transform: jsonSchemaTransform,
  });

  const ctx = new ApiContext(client, store, settings);
  const { metrics } = ctx;
  metrics.watchAdmission({ calls: ctx.admission, relays: ctx.relays });
  metrics.watchFleet(store);
  metrics.watchController(() =>
    client.withDeadline(Date.now() + CONTROLLER_QUERY_MS, () => runningControllerState(client)),
  );
  traceRequests(app, observability.tracing?.tracer ?? null);
  app.addHook('onResponse', async (request, reply) => {
    metrics.observe(
      request.method,
      request.routeOptions.url ?? 'unmatched',
      reply.statusCode,
      reply.elapsedTime / 1000,
    );
  });
  // A flood is refused before its bodies are parsed; probes and metrics are never refused. A
  // register waits in the relay slots, every other call first in the call slots. The route is
  // looked up only when the call could be refused: the lookup builds an object per call.
  app.addHook('onRequest', (request, _reply, done) => {
    if (!ctx.admission.full && !ctx.relays.full) return done();
    const route = request.routeOptions.url ?? '';
    const admission = route === REGISTER_PATH ? ctx.relays : ctx.admission;
    done(admission.full && !operationsPaths.has(route) ? admission.refuseEarly() : undefined);
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

  await app.register(registryRoutes, { ctx });
  await app.register(workspaceRoutes, { ctx });
  await app.register(healthRoutes, { ctx, metrics });
  await app.register(eventRoutes, { ctx });
  await app.register(fleetRoutes, { ctx });
  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());

  return app;
}
