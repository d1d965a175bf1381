/**
 * Every answer other than 2xx, and how a failed dependency becomes one. A status means what it
 * says:
 * - 400 names each bad field and its problem (`issues`), whatever found it (the schema, the JSON
 *   parser, the plugin-source or URL checks);
 * - 429 / 503 with `Retry-After`: we refused or could not serve it now; retrying later is right;
 * - 503 also when Temporal or the database is unreachable or did not answer within the deadline;
 *   for a signal that may have been delivered all the same, `delivery: "unknown"` says so;
 * - 502: Temporal answered, with an error (e.g. a query on a workflow whose tasks fail).
 */
import {
  QueryNotRegisteredError,
  QueryRejectedError,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  isGrpcServiceError,
} from '@temporalio/client';

export interface Issue {
  field: string;
  problem: string;
}

/** Whether a signal whose call failed may have reached its workflow all the same. */
export type Delivery = 'unknown';

export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    readonly options: { retryAfter?: number; issues?: Issue[]; delivery?: Delivery } = {},
  ) {
    super(message);
  }
}

/** A 400 that names its fields. */
export function badRequest(message: string, issues: Issue[]): HttpError {
  return new HttpError(400, message, { issues });
}

/** Seconds a caller waits before retrying a dependency that is down. */
export const DEPENDENCY_RETRY_AFTER_SECONDS = 5;

// gRPC status codes (a fixed part of the gRPC protocol).
const grpcStatus = { CANCELLED: 1, DEADLINE_EXCEEDED: 4, RESOURCE_EXHAUSTED: 8, UNAVAILABLE: 14 } as const;
// Temporal did not answer (unreachable, overloaded, past our deadline): the call may be retried.
const UNAVAILABLE_CODES: ReadonlySet<number> = new Set([
  grpcStatus.UNAVAILABLE,
  grpcStatus.DEADLINE_EXCEEDED,
  grpcStatus.RESOURCE_EXHAUSTED,
  grpcStatus.CANCELLED,
]);

function grpcCode(err: unknown): number | undefined {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (isGrpcServiceError(e)) return e.code;
  }
  return undefined;
}

/**
 * What a failed Temporal call means for the caller. `signal` marks calls that deliver a signal:
 * when Temporal did not answer in time, the signal may have landed, and the answer says so.
 */
export function temporalFailure(err: unknown, what: { signal: boolean }): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof WorkflowExecutionAlreadyStartedError) return new HttpError(404, 'workspace is removed');
  if (err instanceof WorkflowNotFoundError) return new HttpError(404, 'workspace has no running workflow');
  const message = err instanceof Error ? err.message : String(err);
  // The worker answered the query, with a refusal.
  if (err instanceof QueryNotRegisteredError || err instanceof QueryRejectedError)
    return new HttpError(502, `Temporal answered with an error: ${message}`);
  const code = grpcCode(err);
  if (code === undefined || UNAVAILABLE_CODES.has(code)) {
    const unknownFate = what.signal && (code === grpcStatus.DEADLINE_EXCEEDED || code === grpcStatus.CANCELLED);
    return new HttpError(
      503,
      unknownFate
        ? `Temporal did not answer in time (${message}); the signal may have been delivered, and retrying it is safe`
        : `Temporal unavailable: ${message}`,
      { retryAfter: DEPENDENCY_RETRY_AFTER_SECONDS, ...(unknownFate ? { delivery: 'unknown' as const } : {}) },
    );
  }
  return new HttpError(502, `Temporal answered with an error: ${message}`);
}

/** The database could not serve the call: fail closed, never a pass. */
export function databaseFailure(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new HttpError(503, `database unavailable: ${message}`, { retryAfter: DEPENDENCY_RETRY_AFTER_SECONDS });
}
