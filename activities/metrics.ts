/**
 * The fleet's domain counters the worker exports, counted where the event happens: in the
 * activity that does the work (a workflow's code replays, so it counts nothing). They go
 * through the Temporal runtime's meter, so the worker's one Prometheus endpoint serves them
 * beside the SDK's own metrics (worker.ts installWorkerRuntime; docs/metrics.md lists them).
 *
 * Every label value is from a closed set, and each series starts at 0 (those of status changes
 * once they happen), so a rate over it is defined before the first event and an alert can tell
 * "none" from "not exported".
 * A count is taken when the activity's work succeeded; an attempt whose completion was lost
 * and that is retried counts again (at least once, as the work itself is done).
 */
import type { ActivityExecuteInput, ActivityInboundCallsInterceptor, Next } from '@temporalio/worker';
import { ApplicationFailure, noopMetricMeter, type MetricCounter, type MetricMeter } from '@temporalio/common';
import type { Context } from '@temporalio/activity';
import { restartCauses, type RestartCause } from '../workflows/state-machine.js';
import type { PluginChange, ReconcileMode } from '../workflows/state-machine.js';

/** Why a plugin was delivered: missing from the box, drifted there, or at a newer revision. */
export type DeliveryReason = 'missing' | PluginChange;
const deliveryReasons: readonly DeliveryReason[] = ['missing', 'repaired', 'upgraded'];
const reconcileModes: readonly ReconcileMode[] = ['diff', 'verify', 'refresh'];

/** The activities of a reconcile pass: one failing for good fails its plugin, and the pass. */
export const reconcileSteps = [
  'listPluginDiff',
  'listBoxPlugins',
  'probePlugin',
  'stagePlugin',
  'deliverPlugin',
  'recordInstalled',
  'removePlugin',
  'deleteTrackingRow',
] as const;

export class LifecycleMetrics {
  private readonly restarts: MetricCounter;
  private readonly deadDeclarations: MetricCounter;
  private readonly deliveries: MetricCounter;
  private readonly removals: MetricCounter;
  private readonly driftRepairs: MetricCounter;
  private readonly reconcilePasses: MetricCounter;
  private readonly reconcileFailures: MetricCounter;
  private readonly transitions: MetricCounter;

  constructor(meter: MetricMeter = noopMetricMeter) {
    const counter = (name: string, description: string): MetricCounter => meter.createCounter(name, '', description);
    this.restarts = counter(
      'workspace_restarts',
      'Box restarts done, by cause (dead, silent, reconcile, retry, requested)',
    );
    this.deadDeclarations = counter(
      'workspace_dead_declarations',
      'Dead verdicts: boxes dead detection declared dead (their tokens revoked, a restart asked)',
    );
    this.deliveries = counter(
      'workspace_plugin_deliveries',
      'Plugins delivered onto a box, by reason (missing, repaired after drift, upgraded by a refresh)',
    );
    this.removals = counter(
      'workspace_plugin_removals',
      'Plugins taken off a box because they were no longer declared',
    );
    this.driftRepairs = counter(
      'workspace_drift_repairs',
      "Tracked plugins repaired after drift, by how: delivered again, or re-recorded at the box image's revision",
    );
    this.reconcilePasses = counter('workspace_reconcile_passes', 'Reconcile passes started, by mode');
    this.reconcileFailures = counter(
      'workspace_reconcile_failures',
      'Reconcile steps that failed for good (no retry left, or not retryable), by step: each fails its pass',
    );
    this.transitions = counter(
      'workspace_status_transitions',
      'Status changes the workflows made, by from and to status (written once to the event outbox)',
    );
    for (const cause of restartCauses) this.restarts.add(0, { cause });
    this.deadDeclarations.add(0);
    for (const reason of deliveryReasons) this.deliveries.add(0, { reason });
    this.removals.add(0);
    for (const via of ['delivered', 'boot']) this.driftRepairs.add(0, { via });
    for (const mode of reconcileModes) this.reconcilePasses.add(0, { mode });
    for (const step of reconcileSteps) this.reconcileFailures.add(0, { step });
  }

  restarted(cause: RestartCause): void {
    this.restarts.add(1, { cause });
  }

  declaredDead(): void {
    this.deadDeclarations.add(1);
  }

  delivered(reason: DeliveryReason): void {
    this.deliveries.add(1, { reason });
  }

  removed(): void {
    this.removals.add(1);
  }

  repaired(via: 'delivered' | 'boot'): void {
    this.driftRepairs.add(1, { via });
  }

  reconcileStarted(mode: ReconcileMode): void {
    this.reconcilePasses.add(1, { mode });
  }

  reconcileStepFailed(step: string): void {
    this.reconcileFailures.add(1, { step });
  }

  transitioned(from: string, to: string): void {
    this.transitions.add(1, { from, to });
  }
}

const reconcileStepNames: ReadonlySet<string> = new Set(reconcileSteps);

/**
 * Counts a reconcile step's failure once it is final: not retryable, or its last attempt. (A
 * step that times out on its last attempt fails in the server, not here, and is not counted;
 * the SDK's own activity metrics see every failed attempt.)
 */
export class ReconcileFailureCounter implements ActivityInboundCallsInterceptor {
  constructor(
    private readonly metrics: LifecycleMetrics,
    private readonly ctx: Context,
  ) {}

  async execute(input: ActivityExecuteInput, next: Next<ActivityInboundCallsInterceptor, 'execute'>): Promise<unknown> {
    try {
      return await next(input);
    } catch (err) {
      const { activityType, attempt, retryPolicy } = this.ctx.info;
      const lastAttempt = (retryPolicy?.maximumAttempts ?? 0) > 0 && attempt >= (retryPolicy?.maximumAttempts ?? 0);
      const permanent = err instanceof ApplicationFailure && err.nonRetryable;
      if (reconcileStepNames.has(activityType) && (permanent || lastAttempt))
        this.metrics.reconcileStepFailed(activityType);
      throw err;
    }
  }
}
