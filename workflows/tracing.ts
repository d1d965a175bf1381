/**
 * Carries a caller's trace through the workflow to the activities its call causes: the trace
 * context a signal or update arrives with (the header `@temporalio/interceptors-opentelemetry`
 * writes on the client) goes, unchanged, onto every activity scheduled while handling it, and
 * onto those its handler's promises schedule later (a reconcile pass a register started, its
 * probes and deliveries). The worker's OpenTelemetry activity interceptor then makes each
 * activity's span a child of the caller's span: one trace from the HTTP call to the activities.
 *
 * The workflow itself makes no spans. OpenTelemetry's workflow interceptors evaluate its SDK and
 * keep an AsyncLocalStorage per cached workflow, and this worker caches the fleet
 * (docs/performance.md); this module is preloaded once per worker thread and keeps one
 * AsyncLocalStorage for all workflows, as the SDK's own cancellation scopes do: a store belongs
 * to the promises of the handler that set it, so no trace crosses into another workspace.
 *
 * Log lines of the workflow carry `workspace_id`, and `trace_id` while a traced call is handled.
 * Replay-safe: nothing here schedules a command or yields.
 */
import type { Payload } from '@temporalio/common';
import { defaultPayloadConverter } from '@temporalio/common';
import {
  AsyncLocalStorage,
  workflowInfo,
  type ActivityInput,
  type GetLogAttributesInput,
  type LocalActivityInput,
  type Next,
  type SignalInput,
  type UpdateInput,
  type WorkflowInboundCallsInterceptor,
  type WorkflowInterceptors,
  type WorkflowOutboundCallsInterceptor,
} from '@temporalio/workflow';
import { workspaceIdOfWorkflow } from './definitions.js';

/** The header OpenTelemetry's Temporal interceptors carry the W3C trace context in. */
export const TRACE_HEADER = '_tracer-data';

// Shared by every workflow of the thread; see above for why no workspace's trace leaks into another's.
const callerTrace = new AsyncLocalStorage<Payload>();

function withCallerTrace<T>(headers: Record<string, Payload>, handle: () => T): T {
  const trace = headers[TRACE_HEADER];
  return trace === undefined ? handle() : callerTrace.run(trace, handle);
}

function withTraceHeader<T extends { headers: Record<string, Payload> }>(input: T): T {
  const trace = callerTrace.getStore();
  if (trace === undefined || input.headers[TRACE_HEADER] !== undefined) return input;
  return { ...input, headers: { ...input.headers, [TRACE_HEADER]: trace } };
}

/** The trace id of a W3C `traceparent` carried in the header, or undefined. */
function traceId(trace: Payload | undefined): string | undefined {
  if (trace === undefined) return undefined;
  try {
    const carrier = defaultPayloadConverter.fromPayload<{ traceparent?: unknown }>(trace);
    const parent = typeof carrier.traceparent === 'string' ? carrier.traceparent : '';
    return /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(parent)?.[1];
  } catch {
    return undefined;
  }
}

class TraceInbound implements WorkflowInboundCallsInterceptor {
  handleSignal(input: SignalInput, next: Next<WorkflowInboundCallsInterceptor, 'handleSignal'>): Promise<void> {
    return withCallerTrace(input.headers, () => next(input));
  }

  handleUpdate(input: UpdateInput, next: Next<WorkflowInboundCallsInterceptor, 'handleUpdate'>): Promise<unknown> {
    return withCallerTrace(input.headers, () => next(input));
  }
}

class TraceOutbound implements WorkflowOutboundCallsInterceptor {
  scheduleActivity(input: ActivityInput, next: Next<WorkflowOutboundCallsInterceptor, 'scheduleActivity'>) {
    return next(withTraceHeader(input));
  }

  scheduleLocalActivity(
    input: LocalActivityInput,
    next: Next<WorkflowOutboundCallsInterceptor, 'scheduleLocalActivity'>,
  ) {
    return next(withTraceHeader(input));
  }

  getLogAttributes(
    input: GetLogAttributesInput,
    next: Next<WorkflowOutboundCallsInterceptor, 'getLogAttributes'>,
  ): Record<string, unknown> {
    const trace = traceId(callerTrace.getStore());
    return next({
      workspace_id: workspaceIdOfWorkflow(workflowInfo().workflowId),
      ...(trace === undefined ? {} : { trace_id: trace }),
      ...input,
    });
  }
}

export const interceptors = (): WorkflowInterceptors => ({
  inbound: [new TraceInbound()],
  outbound: [new TraceOutbound()],
});
