/**
 * Signals and queries of the workspace workflow, defined once and shared by the workflow,
 * the API, the tests and the benchmarks.
 */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { LifecycleConfig } from './config.js';
import type { CommandAnswer, InitialStatus, WorkspaceState } from './state-machine.js';

export const TASK_QUEUE = 'workspace-lifecycle';

/** One workflow per workspace; this id is how every caller reaches it. */
export function workspaceWorkflowId(workspaceId: string): string {
  return `workspace:${workspaceId}`;
}

/** The workspace a workflow id names (the id itself when it is not a workspace's). */
export function workspaceIdOfWorkflow(workflowId: string): string {
  return workflowId.startsWith('workspace:') ? workflowId.slice('workspace:'.length) : workflowId;
}

/** Payloads arrive unvalidated: the workflow validates them and records rejections in state. */
export const registerSignal = defineSignal<[payload: unknown]>('register');
/** A heartbeat the workflow wanted (its liveness contract); the others are only in the heartbeat ledger. */
export const heartbeatSignal = defineSignal<[payload: unknown]>('heartbeat');

export interface LeaseExpiry {
  /** The contract version whose lease expired: an older one than the workflow's last is stale. */
  version: number;
  /** How long the lease has been silent, on the database's clock. */
  silentForMs: number;
}
/** The fleet liveness controller found the workspace's lease expired. */
export const leaseExpiredSignal = defineSignal<[expiry: LeaseExpiry]>('leaseExpired');
export const deprovisionSignal = defineSignal('deprovision');
/** The declared plugin set changed (already stored): reconcile if the workspace is live. */
export const declarePluginsSignal = defineSignal('declarePlugins');

export interface ReconcileRequest {
  /** Stage every declared plugin again and deliver a newer revision (a branch's new head). */
  refresh?: boolean;
  /** Who asked, shown in state and the UI; defaults to `operator`. */
  requester?: string;
}
/** An operator asks for a pass that verifies the box (and with `refresh`, upgrades). */
export const reconcileSignal = defineSignal<[request?: ReconcileRequest]>('reconcile');

export interface RestartRequest {
  reason?: string;
  /** Who asked, shown in state and the UI; defaults to `operator`. */
  requester?: string;
}
export const restartSignal = defineSignal<[request?: RestartRequest]>('restart');

/**
 * The operator commands as Updates (docs/restarts.md): each answers what it did, `started`,
 * `merged` into one in flight (or a cordon in force), or `refused` and why.
 */
export const restartUpdate = defineUpdate<CommandAnswer, [request: RestartRequest]>('requestRestart');
export const reconcileUpdate = defineUpdate<CommandAnswer, [request: ReconcileRequest]>('requestReconcile');

export interface CordonRequest {
  /** Why the workspace is held, shown in state and the UI. */
  reason?: string;
  /** Who asked; defaults to `operator`. */
  requester?: string;
}
/** Hold the workspace: nothing automatic restarts it or delivers to it until uncordon. */
export const cordonUpdate = defineUpdate<CommandAnswer, [request: CordonRequest]>('cordon');
/** End the hold: what it held runs once. */
export const uncordonUpdate = defineUpdate<CommandAnswer, [request: Pick<CordonRequest, 'requester'>]>('uncordon');

/**
 * The dead-detection verdict for a caller that could not reach the box:
 * - alive: the box runs (or could not be probed): the caller's own error handling applies.
 * - queued: the box is settling after a restart or beat recently: retry later.
 * - dead: declared dead; offline, URL cleared, tokens revoked, restart triggered.
 * - restarting: a restart is in flight: retry later.
 */
export type Verdict = 'alive' | 'queued' | 'dead' | 'restarting';
export interface DispatchFailure {
  /** Who could not reach the box, for the record. */
  caller?: string;
  /** What the caller saw, for the record. */
  error?: string;
  /**
   * An operator's own look (the recreate at start), not a caller's report: its dead verdict takes
   * nothing of the fleet's remediation budget, as an operator's restart does not. Never from HTTP.
   */
  operator?: boolean;
}
export interface DispatchVerdict {
  verdict: Verdict;
  detail: string;
  /** Set when this evaluation struck the settling box: its strikes in the window, this one included. */
  strikes?: number;
}
export const dispatchFailedUpdate = defineUpdate<DispatchVerdict, [failure: DispatchFailure]>('dispatchFailed');

export const stateQuery = defineQuery<WorkspaceState>('state');

export interface WorkspaceWorkflowInput {
  workspaceId: string;
  /** Defaults to provisioning; awaiting_agent for externally run workspaces. */
  initialStatus?: InitialStatus;
  config?: Partial<LifecycleConfig>;
  /** Set only by continue-as-new: the state the previous run ended with. */
  carried?: WorkspaceState;
}

/**
 * The input a workspace's workflow starts with, from what the database knows of the workspace,
 * whoever starts it (its creation, a runtime's call, a recreation): an external runtime's
 * workspace starts awaiting its agent, a managed one provisioning.
 */
export function workspaceStartInput(
  workspaceId: string,
  external: boolean,
  config: Partial<LifecycleConfig> = {},
): WorkspaceWorkflowInput {
  return {
    workspaceId,
    initialStatus: external ? 'awaiting_agent' : 'provisioning',
    ...(Object.keys(config).length > 0 ? { config } : {}),
  };
}

/** The one fleet liveness controller (docs/fleet-liveness.md): its workflow id. */
export const FLEET_LIVENESS_WORKFLOW_ID = 'fleet-liveness';

export interface FleetLivenessSettings {
  /** How often the controller sweeps the heartbeat ledger for expired leases (WL_LIVENESS_SWEEP_EVERY_MS). */
  sweepEveryMs: number;
  /** The most expired leases one sweep signals; the rest wait for the next sweep. */
  batch: number;
  /**
   * The share of the watched leases (0 to 1) that, silent within one TTL, suspects the observer
   * instead of the fleet: a disruption, nobody signalled (WL_DISRUPTION_SHARE).
   */
  disruptionShare: number;
  /** The fewest silent leases that make a disruption, so a small fleet is not disrupted by one (WL_DISRUPTION_MIN_LEASES). */
  disruptionMinLeases: number;
  /** No API process served for this long: a disruption (WL_API_SERVING_GRACE_MS). */
  apiServingGraceMs: number;
  /** The most leaseExpired signals per minute, fleet-wide (WL_REMEDIATION_PER_MINUTE). */
  remediationPerMinute: number;
}

export const defaultFleetLivenessSettings: FleetLivenessSettings = {
  sweepEveryMs: 5_000,
  batch: 1_000,
  disruptionShare: 0.5,
  disruptionMinLeases: 3,
  apiServingGraceMs: 30_000,
  remediationPerMinute: 60,
};

export interface FleetLivenessInput {
  settings?: Partial<FleetLivenessSettings>;
  /** Set only by continue-as-new: the state the previous run ended with. */
  carried?: FleetLivenessState;
}

/** One sweep, as the controller shows it. */
export interface SweepRecord {
  at: string;
  /** Leases watched. */
  watched: number;
  /** Expired and not yet signalled. */
  expired: number;
  /** Workspaces told, workspaces with no running workflow, signals that failed. */
  signalled: number;
  gone: number;
  failed: number;
  /** Expired leases left for a later sweep: the remediation budget was spent, or remediation is paused. */
  held: number;
}

/**
 * The fleet looks silent because the observer is: a share of the leases went silent within one
 * TTL, or no API process served. Times are the database's.
 */
export interface Disruption {
  since: string;
  /** The leases silent within one TTL (expired now, or signalled within the last TTL). */
  silent: number;
  watched: number;
  /** silent / watched. */
  share: number;
  /** How long no API process has served, when that is a cause; null otherwise. */
  apiSilentForMs: number | null;
}

/** Automatic remediation held by an operator: nobody is signalled until resumed. */
export interface RemediationPause {
  reason: string;
  by: string;
  /** The controller's clock. */
  since: string;
}

export interface FleetLivenessState {
  settings: FleetLivenessSettings;
  /** Sweeps finished, across runs. */
  sweeps: number;
  lastSweep: SweepRecord | null;
  /** The last sweep that failed (the database or Temporal unreachable): no sweep, no verdict. */
  lastFailure: { at: string; error: string } | null;
  /** Expired leases found and signalled; dead verdicts asked by callers granted and refused (grantRemediation). */
  totals: { expiredFound: number; signalled: number; granted: number; refused: number };
  /** Completed runs (continue-as-new count). */
  runs: number;
  /** The disruption in progress; null when the fleet is judged one by one. */
  disruption: Disruption | null;
  /** The last disruption that ended, and when (the database's clock). */
  lastDisruption: (Disruption & { until: string }) | null;
  /**
   * The database's time the last disruption ended: a lease is silent only from here, so no
   * workspace is condemned for time the observer could not hear it. Null: no disruption yet.
   */
  notBefore: string | null;
  /** Leases signalled within the last TTL, by sweep (the database's time): they count toward the silent share. */
  recentVerdicts: { at: string; count: number }[];
  /** The remediation token bucket: signals it may send now, as of `at` (the database's time). */
  remediation: { tokens: number; at: string | null };
  paused: RemediationPause | null;
}

/** Changes the controller's settings (a worker starting sends its own: signal-with-start). */
export const configureSignal = defineSignal<[settings: Partial<FleetLivenessSettings>]>('configure');
export const fleetLivenessStateQuery = defineQuery<FleetLivenessState>('state');

/** What pausing or resuming remediation did, and the pause in force after it. */
export interface RemediationAnswer {
  outcome: 'paused' | 'already-paused' | 'resumed' | 'not-paused';
  paused: RemediationPause | null;
}
/** Holds automatic remediation for the fleet: nobody is signalled `leaseExpired` until resumed. */
export const pauseRemediationUpdate = defineUpdate<RemediationAnswer, [request: { reason: string; by: string }]>(
  'pauseRemediation',
);
export const resumeRemediationUpdate = defineUpdate<RemediationAnswer, [request: { by: string }]>('resumeRemediation');

/** A workspace's dead detection asks before it declares a caller's dead verdict; `now` is the database's. */
export interface RemediationRequest {
  workspaceId: string;
  requester: string;
  now: string;
}
/** Granted: declare dead and restart. Refused: no verdict, and why (a disruption, a pause, the budget spent). */
export type RemediationGrant = { granted: true } | { granted: false; reason: string };
/**
 * Takes one token of the fleet's remediation budget for a dead verdict asked by a caller
 * (`POST /workspaces/:id/dispatch-failed`), so that callers' verdicts and the silence verdicts of
 * the sweeps share one rate, one pause and one disruption.
 */
export const grantRemediationUpdate = defineUpdate<RemediationGrant, [request: RemediationRequest]>('grantRemediation');
