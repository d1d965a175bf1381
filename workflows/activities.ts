/**
 * Every activity the workflow calls, with its timeouts and retry policy, in one place.
 *
 * A worker that dies mid-activity must be noticed in seconds, not at a start-to-close timeout
 * sized for the slowest legitimate run:
 * - short calls (a query, a probe, one row) get a start-to-close sized to their work;
 * - long calls (staging a plugin from its source, delivering it, restarting the box) heartbeat
 *   while they work, and a heartbeat timeout of a few seconds hands them to another worker
 *   soon after theirs died. Each is idempotent for its key, so the retry finishes the work
 *   instead of doing it twice.
 * Timeouts and retry policies are not part of the workflow's command sequence: changing them
 * needs no patch.
 */
import { proxyActivities, proxyLocalActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';

/** Transient trouble (the database restarting, the box booting) is retried with backoff. */
const retryWithBackoff = { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' } as const;

/** How long a long activity may go without a heartbeat before it is retried elsewhere. */
export const LONG_ACTIVITY_HEARTBEAT_TIMEOUT = '10s';

/** Diff, plugin probe, tracking row: one query or one small read each. */
export const reconcileStep = proxyActivities<Activities>({
  startToCloseTimeout: '20s',
  retry: { ...retryWithBackoff, maximumAttempts: 6 },
});

/** Stage (fetch from the source) and deliver (copy onto the box): as long as they need, while they heartbeat. */
export const reconcileTransfer = proxyActivities<Activities>({
  startToCloseTimeout: '10m',
  heartbeatTimeout: LONG_ACTIVITY_HEARTBEAT_TIMEOUT,
  retry: { ...retryWithBackoff, maximumAttempts: 6 },
});

/** Restarting or stopping the box waits for the runtime to stop; it heartbeats meanwhile. */
export const boxControl = proxyActivities<Activities>({
  startToCloseTimeout: '2m',
  heartbeatTimeout: LONG_ACTIVITY_HEARTBEAT_TIMEOUT,
  retry: { ...retryWithBackoff, maximumAttempts: 5 },
});

/** Token revocation: one statement. */
export const bookkeeping = proxyActivities<Activities>({
  startToCloseTimeout: '15s',
  retry: { ...retryWithBackoff, maximumAttempts: 5 },
});

/**
 * The projection write (with the liveness contract) and the plugin diff, as local activities: one
 * statement each (a versioned upsert, a read), so a retry or a replayed call is harmless. They run
 * in the worker that asked for them and cost the server no task of their own; while the database
 * is down they retry inside the workflow task (the SDK extends it), then fail: the workflow writes
 * its latest projection again after a pause, and a failed diff fails its pass.
 */
export const localStep = proxyLocalActivities<Activities>({
  startToCloseTimeout: '15s',
  retry: { ...retryWithBackoff, maximumAttempts: 5 },
});

/**
 * The heartbeat ledger, read before dead detection decides: a few quick tries, then no verdict
 * (the database is down, and so is the API's heartbeat route).
 */
export const ledger = proxyActivities<Activities>({
  startToCloseTimeout: '5s',
  retry: { initialInterval: '500ms', backoffCoefficient: 2, maximumInterval: '4s', maximumAttempts: 4 },
});

/**
 * Dead detection's request for a token of the fleet's remediation budget: the database's time, then
 * an Update on the fleet liveness controller. A few quick tries, then no verdict (the caller retries).
 */
export const remediationBudget = proxyActivities<Activities>({
  startToCloseTimeout: '10s',
  retry: { initialInterval: '500ms', backoffCoefficient: 2, maximumInterval: '4s', maximumAttempts: 3 },
});

/** Dead detection's one look at the box: a transport error means "assume alive", so it is never retried. */
export const boxProbe = proxyActivities<Activities>({ startToCloseTimeout: '10s', retry: { maximumAttempts: 1 } });

/**
 * The fleet liveness controller's look at the leases: one query, as a local activity (a marker,
 * no task of its own). While the database is down it fails after a few tries: no sweep, no
 * verdict, and the next sweep tries again.
 */
export const sweepStep = proxyLocalActivities<Activities>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '4s', maximumAttempts: 3 },
});

/** Signalling the workspaces whose lease expired: as long as the batch needs, while it heartbeats. */
export const sweepSignals = proxyActivities<Activities>({
  startToCloseTimeout: '10m',
  heartbeatTimeout: LONG_ACTIVITY_HEARTBEAT_TIMEOUT,
  retry: { ...retryWithBackoff, maximumAttempts: 3 },
});
