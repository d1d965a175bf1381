/**
 * Traces, with OpenTelemetry: a span per HTTP call (api/tracing.ts), the Temporal client's span
 * for the signal or update it sends, and the worker's span per activity, all in one trace: the
 * client writes the trace context into the call's headers, the workflow carries it onto the
 * activities the call causes (workflows/tracing.ts), and the worker continues it there.
 *
 * On when an OTLP endpoint is configured (settings.ts tracingFromEnv), exported over OTLP/HTTP in
 * batches; off otherwise, and then nothing is traced at all. One tracer provider per process
 * (`npm start` runs the API and the worker in one): the first call registers it.
 *
 * Log lines carry `trace_id` and `workspace_id`: the API's (api/tracing.ts), the activities'
 * (workspaceLogAttributes below) and the workflows' (workflows/tracing.ts).
 */
import { context, propagation, trace, type Tracer } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { Resource } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  SimpleSpanProcessor,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import type { Context as ActivityContext } from '@temporalio/activity';
import type { ClientInterceptors } from '@temporalio/client';
import {
  OpenTelemetryActivityInboundInterceptor,
  OpenTelemetryActivityOutboundInterceptor,
  OpenTelemetryWorkflowClientInterceptor,
} from '@temporalio/interceptors-opentelemetry';
import type {
  ActivityInterceptors,
  ActivityOutboundCallsInterceptor,
  GetLogAttributesInput,
  Next,
} from '@temporalio/worker';
import type { TracingSettings } from './settings.js';
import { workspaceIdOfWorkflow } from './workflows/definitions.js';

export interface Tracing {
  tracer: Tracer;
  /** Exports what is still buffered and stops. */
  shutdown: () => Promise<void>;
}

let registered: Tracing | undefined;

/**
 * The process's tracing, registered on the first call (later calls get the same one):
 * OTLP/HTTP to `settings.url`, or to `exporter` (a test's in-memory exporter, spans exported
 * one by one). Null when tracing is off.
 */
export function startTracing(
  serviceName: string,
  settings: TracingSettings | null,
  exporter?: SpanExporter,
): Tracing | null {
  if (registered !== undefined) return registered;
  if (settings === null && exporter === undefined) return null;
  const processor: SpanProcessor =
    exporter === undefined
      ? new BatchSpanProcessor(new OTLPTraceExporter({ url: settings?.url }))
      : new SimpleSpanProcessor(exporter);
  const provider = new BasicTracerProvider({
    resource: new Resource({ 'service.name': serviceName }),
    spanProcessors: [processor],
  });
  provider.register({
    contextManager: new AsyncLocalStorageContextManager(),
    propagator: new W3CTraceContextPropagator(),
  });
  registered = {
    tracer: provider.getTracer('workspace-lifecycle'),
    shutdown: async () => {
      await provider.shutdown();
      trace.disable();
      context.disable();
      propagation.disable();
      registered = undefined;
    },
  };
  return registered;
}

/** The Temporal client's interceptors: each call's span, its context in the call's headers. */
export function clientInterceptors(tracing: Tracing | null): ClientInterceptors | undefined {
  if (tracing === null) return undefined;
  return { workflow: [new OpenTelemetryWorkflowClientInterceptor({ tracer: tracing.tracer })] };
}

/** What the activities' log lines carry besides the SDK's attributes: the workspace they work on. */
class WorkspaceLogAttributes implements ActivityOutboundCallsInterceptor {
  constructor(private readonly ctx: ActivityContext) {}

  getLogAttributes(
    input: GetLogAttributesInput,
    next: Next<ActivityOutboundCallsInterceptor, 'getLogAttributes'>,
  ): Record<string, unknown> {
    const workflowId = this.ctx.info.workflowExecution?.workflowId;
    return next(workflowId === undefined ? input : { workspace_id: workspaceIdOfWorkflow(workflowId), ...input });
  }
}

/**
 * The worker's activity interceptors for traces and logs: a span per activity, a child of the
 * caller's when the workflow carried one (OpenTelemetry's; its log attributes add `trace_id`),
 * and `workspace_id` on every log line.
 */
export function activityInterceptors(tracing: Tracing | null): ((ctx: ActivityContext) => ActivityInterceptors)[] {
  const workspace = (ctx: ActivityContext): ActivityInterceptors => ({ outbound: new WorkspaceLogAttributes(ctx) });
  if (tracing === null) return [workspace];
  return [
    (ctx) => ({
      inbound: new OpenTelemetryActivityInboundInterceptor(ctx, { tracer: tracing.tracer }),
      outbound: new OpenTelemetryActivityOutboundInterceptor(ctx),
    }),
    workspace,
  ];
}
