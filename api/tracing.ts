/**
 * Each HTTP call as a span (when tracing is on, tracing.ts) and its log lines with the ids an
 * operator searches by: `trace_id`, and `workspace_id` once the call is validated.
 *
 * The span is the trace's root, or the child of a W3C `traceparent` the caller sent; it is the
 * active span while the route runs, so the Temporal client's span for the signal or update the
 * route sends is its child, and through the workflow so are the activities that call causes.
 * Probes, scrapes and event streams are not traced.
 */
import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { EVENTS_PATH } from './routes/events.js';
import { operationsPaths } from './routes/health.js';

/** The workspace a validated call is about: its path's `:id`, a register's `id`, a heartbeat's `workspace_id`. */
function workspaceOf(request: FastifyRequest): string | undefined {
  const params = request.params as { id?: unknown } | undefined;
  const body = request.body as { id?: unknown; workspace_id?: unknown } | undefined;
  const id = params?.id ?? body?.workspace_id ?? body?.id;
  return typeof id === 'string' ? id : undefined;
}

/** A call's logger that can take more fields in place (pino's). */
type Rebindable = FastifyRequest['log'] & { setBindings?: (bindings: Record<string, string>) => void };

/**
 * Adds fields to every later log line of the call, the completion line included. Fastify gives
 * each call a logger of its own: the fields go into it, which costs a fraction of a child of it.
 * A logger shared with other calls (`root`) gets a child instead.
 */
function logWith(
  root: FastifyInstance['log'],
  request: FastifyRequest,
  reply: FastifyReply,
  fields: Record<string, string>,
): void {
  const own: Rebindable = request.log;
  if (own !== root && own.setBindings !== undefined) return own.setBindings(fields);
  const log = own.child(fields);
  request.log = log;
  reply.log = log;
}

/** Registers the hooks on `app`; before the routes, whose handlers it wraps. */
export function traceRequests(app: FastifyInstance, tracer: Tracer | null): void {
  const spans = new WeakMap<FastifyRequest, Span>();

  app.addHook('preHandler', (request, reply, done) => {
    const workspaceId = workspaceOf(request);
    if (workspaceId !== undefined) {
      logWith(app.log, request, reply, { workspace_id: workspaceId });
      spans.get(request)?.setAttribute('workspace.id', workspaceId);
    }
    done();
  });
  if (tracer === null) return;

  app.addHook('onRequest', (request, reply, done) => {
    const route = request.routeOptions.url;
    // A stream lasts hours: its span would say nothing.
    if (route === undefined || operationsPaths.has(route) || route === EVENTS_PATH) return done();
    const parent = propagation.extract(ROOT_CONTEXT, request.headers);
    const span = tracer.startSpan(
      `${request.method} ${route}`,
      {
        kind: SpanKind.SERVER,
        attributes: { 'http.request.method': request.method, 'http.route': route, 'url.path': request.url },
      },
      parent,
    );
    spans.set(request, span);
    logWith(app.log, request, reply, { trace_id: span.spanContext().traceId });
    done();
  });

  app.addHook('onResponse', (request, reply, done) => {
    const span = spans.get(request);
    if (span !== undefined) {
      span.setAttribute('http.response.status_code', reply.statusCode);
      if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    }
    done();
  });

  // The route runs with its span active, so what it calls (the Temporal client) continues the trace.
  app.addHook('onRoute', (route) => {
    const handler = route.handler;
    route.handler = function (this: FastifyInstance, request: FastifyRequest, reply: FastifyReply) {
      const span = spans.get(request);
      if (span === undefined) return handler.call(this, request, reply);
      return context.with(trace.setSpan(context.active(), span), () => handler.call(this, request, reply));
    };
  });
}
