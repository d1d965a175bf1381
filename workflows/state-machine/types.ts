/**
 * The workspace's state, the events that change it and the effects a change asks for: what
 * every module of the state machine works on, and what the workflow keeps and carries across
 * continue-as-new.
 */
import type { DeliveryMode, WorkspaceKind } from '../payloads.js';

/**
 * Workspace statuses, each with one meaning:
 * - provisioning: the box is being created or restarted; no runtime has checked in since.
 * - online: the runtime checked in and its last heartbeat was healthy.
 * - degraded: the runtime beats but reports itself unhealthy (high error rate or wedged).
 * - offline: the runtime went silent for longer than the liveness TTL.
 * - awaiting_agent: an external runtime (see Runtime) that has not checked in, or went silent.
 * - failed: provisioning did not complete within the provisioning timeout.
 * - removed: deprovisioned; terminal, nothing resurrects it.
 */
export const statuses = [
  'provisioning',
  'online',
  'degraded',
  'offline',
  'awaiting_agent',
  'failed',
  'removed',
] as const;
export type Status = (typeof statuses)[number];

/** Statuses a workflow may be started in. */
export type InitialStatus = Extract<Status, 'provisioning' | 'awaiting_agent'>;

export type SignalName = 'register' | 'heartbeat';

/**
 * Who runs the workspace's runtime. `managed`: the service's box driver, so the service probes,
 * restarts and delivers plugins to it. `external`: someone else, somewhere the service does not
 * reach (a workspace created awaiting its agent): never probed, never declared dead, never
 * restarted, never delivered to; a silent one goes back to awaiting_agent.
 */
export type Runtime = 'managed' | 'external';

export interface AgentCardSummary {
  name: string | null;
  description: string | null;
  version: string | null;
  skills: number;
}

export interface LastHeartbeat {
  at: string;
  errorRate: number;
  sampleError: string;
  activeTasks: number;
  currentTask: string;
  uptimeSeconds: number;
  monthlySpend: number;
  runtimeState: string;
  /** The runtime manages its own status: error rates do not degrade it (reference `status_mgmt`). */
  managesOwnStatus: boolean;
}

/**
 * Which heartbeats the workflow wants forwarded now (docs/fleet-liveness.md):
 * - any: the next one, whatever it says (it brings the workspace online, or a settle window waits
 *   for the new runtime's first heartbeat);
 * - degrading: one that degrades an online workspace;
 * - recovering: one that recovers a degraded workspace;
 * - none: no heartbeat changes the status (a restart in flight, or removed).
 * Whatever the want, a heartbeat that brings the first agent card is wanted too.
 */
export type HeartbeatWant = 'any' | 'degrading' | 'recovering' | 'none';

/**
 * What the workflow publishes into its heartbeat ledger row with each projection write: which
 * heartbeats the API forwards, under the workflow's own thresholds, and whether silence past the
 * liveness TTL is a verdict (the fleet liveness controller watches the lease).
 */
export interface LivenessContract {
  want: HeartbeatWant;
  degradeErrorRate: number;
  recoverErrorRate: number;
  hasCard: boolean;
  leaseWatched: boolean;
  leaseTtlMs: number;
}

/** A contract as published: with the projection version it was written with. */
export interface PublishedContract extends LivenessContract {
  version: number;
}

export interface Rejection {
  /** The signal refused, or `restart` for a restart request the workspace cannot take. */
  signal: SignalName | 'restart';
  reason: string;
  at: string;
}

export interface StatusChange {
  from: Status;
  to: Status;
  cause: string;
  at: string;
}

export type ReconcileOutcome = 'succeeded' | 'failed';

/**
 * How deep a reconcile pass looks, each mode doing what the one before does and more:
 * - diff: declared against tracked (deliver what is missing, remove what is no longer declared);
 * - verify: also one listing of the box's plugins, to repair drift (a tracked plugin that is
 *   gone from the box or at another revision: the box was rebuilt, or someone deleted it);
 * - refresh: also stage every declared plugin again and deliver a newer revision (a branch's new head).
 */
export type ReconcileMode = 'diff' | 'verify' | 'refresh';

/** What a reconcile pass set out to change on the box (known once it has diffed and listed). */
export interface ReconcilePlan {
  /** Declared plugins without a tracking row. */
  deliveries: number;
  /** Tracked plugins no longer declared. */
  removals: number;
  /** Tracked plugins gone from the box or at another revision there. */
  repairs: number;
  /** Declared plugins staged again for a newer revision (refresh). */
  refreshes: number;
}

export interface ReconcileState {
  /** A reconcile pass is executing now. */
  running: boolean;
  /** A trigger arrived while running: exactly one more pass follows. */
  followUp: boolean;
  lastTrigger: string | null;
  lastStartedAt: string | null;
  lastFinishedAt: string | null;
  lastOutcome: ReconcileOutcome | null;
  lastError: string | null;
  /** The running (or last) pass's mode. */
  mode: ReconcileMode;
  /** The deepest mode the follow-up must run in. */
  followUpMode: ReconcileMode;
  /** An operator asked for the follow-up: it runs even while cordoned. */
  followUpByOperator: boolean;
  /** Automatic passes held while cordoned: one pass in this mode runs on uncordon; null when none. */
  heldMode: ReconcileMode | null;
  /** When a verify (or refresh) pass was last asked for: the periodic resync counts from it. */
  lastVerifyAt: string | null;
  /** The running pass's plan; null before it has diffed, and between passes. */
  plan: ReconcilePlan | null;
  /** What the last finished pass changed on the box. */
  lastChanges: { delivered: number; removed: number; repaired: number; upgraded: number } | null;
}

/** How a tracked plugin got onto the box: found there by the probe, or delivered by the reconcile. */
export type InstalledVia = 'boot' | 'delivered';

/** Why a tracked plugin was delivered again: it drifted on the box, or its source has a newer revision. */
export type PluginChange = 'repaired' | 'upgraded';

/** What one reconcile pass did with one plugin. */
export type PluginOutcome =
  | { name: string; status: 'installed'; via: InstalledVia; revision: string; change?: PluginChange }
  /** No longer declared: gone from the box, its tracking row deleted. */
  | { name: string; status: 'removed' }
  /** `delivered`: the box changed (a delivery or removal reached it), but a later step (its tracking row) failed. */
  | { name: string; status: 'failed'; error: string; delivered?: true };

export interface ReconcileReport {
  declared: number;
  /** The declared plugins' names. */
  declaredNames: string[];
  outcomes: PluginOutcome[];
  /** A verify pass could not list the box's plugins: drift was not looked for. */
  verifyError?: string;
  /**
   * The runtime's active tasks the heartbeat ledger last recorded, read once the pass changed the
   * box (restartNeeded); absent when nothing changed or the ledger could not be read.
   */
  activeTasks?: number;
}

export interface PluginState {
  status: 'installed' | 'failed';
  via: InstalledVia | null;
  revision: string | null;
  error: string | null;
  /** Reconcile passes that worked on this plugin. */
  attempts: number;
  /** Set when the last pass delivered it again: repaired after drift, or upgraded. */
  change?: PluginChange | null;
  updatedAt: string;
}

/**
 * Why a restart was asked, in a word (the metrics' label; the reason says the rest):
 * - dead: dead detection declared the box dead;
 * - silent: offline and still silent a liveness TTL later (the watchdog);
 * - reconcile: the reconcile delivered or removed plugins, which load at start;
 * - retry: a failed restart asked again;
 * - requested: an operator or another caller of the API asked.
 */
export type RestartCause = 'dead' | 'silent' | 'reconcile' | 'retry' | 'requested';
export const restartCauses: readonly RestartCause[] = ['dead', 'silent', 'reconcile', 'retry', 'requested'];

/**
 * A restart asked for that waits (docs/restarts.md), by the first hold that applies:
 * - cordoned: an operator holds the workspace; nothing automatic restarts until uncordon;
 * - crash-loop backoff: the runtime crashed twice or more in a row; the next automatic restart
 *   waits until `nextAttemptAt`;
 * - draining: a restart that only loads plugins waits while the last heartbeat reports active
 *   tasks, until the drain deadline.
 * Operator restarts are never held.
 */
export type RestartHold = 'cordoned' | 'crash-loop backoff' | 'draining';

export interface HeldRestart {
  reason: string;
  requester: string;
  cause: RestartCause;
  /** When it was first asked: the drain deadline counts from it. */
  since: string;
}

export interface RestartState {
  inFlight: boolean;
  /** A request arrived while one was in flight: exactly one more restart follows. */
  followUp: { reason: string; requester: string; cause?: RestartCause } | null;
  count: number;
  lastReason: string | null;
  lastRequester: string | null;
  lastStartedAt: string | null;
  /** End of the settle window of the last restart: a lone not-running probe before it is not trusted. */
  settleUntil: string | null;
  lastFinishedAt: string | null;
  lastError: string | null;
  /** Restarts that failed in a row (after their activity's own retries); 0 after a success. */
  failures: number;
  /** When the failed restart is asked again (a durable deadline), or null. */
  retryAt: string | null;
  /** A restart asked for and held (see RestartHold); at most one, requests meanwhile merge into it. */
  held: HeldRestart | null;
  /** Crashes in a row: the runtime died within the healthy stretch after its last restart. */
  crashes: number;
  /** Two crashes or more in a row: automatic restarts back off. */
  crashLooping: boolean;
  /** While crash-looping, when the next automatic restart may start; null once it started. */
  nextAttemptAt: string | null;
}

/** An operator holds the workspace: nothing automatic restarts it or delivers to it. */
export interface Cordon {
  since: string;
  reason: string;
  requester: string;
}

/** What an operator command did: started, merged into one in flight (or in force), or refused and why. */
export interface CommandAnswer {
  outcome: 'started' | 'merged' | 'refused';
  detail: string;
}

export type ProbeResult = 'running' | 'not-running' | 'error';

export interface DeadDetectionState {
  /** Strikes in the current window: not-running probes while settling with no heartbeat. */
  strikes: { count: number; firstAt: string; lastAt: string } | null;
  lastProbe: { result: ProbeResult; at: string } | null;
  lastVerdict: { verdict: string; detail: string; requester: string; at: string } | null;
  deadDeclarations: number;
}

export interface Counters {
  registers: number;
  heartbeats: number;
  rejected: number;
  /** Transitions into online (or other causes) that asked for a reconcile. */
  reconcilesRequested: number;
  /** Passes actually started; requested minus coalesced (held while cordoned counts as coalesced). */
  reconcilesStarted: number;
  /** Requests folded into a follow-up because a pass was already running or queued. */
  reconcilesCoalesced: number;
  reconcilesFailed: number;
  /** Status changes so far. */
  transitions: number;
  /**
   * Projection writes so far (a status, URL or mode change each); with `transitions` it numbers
   * them, so every change is newer than the row it replaces, a URL change alone too.
   */
  projectionWrites: number;
  /** Completed runs of this workflow (continue-as-new count). */
  runs: number;
  /** Plugins removed from the box because they were no longer declared. */
  pluginsRemoved: number;
  /** Tracked plugins delivered again because the box had lost or changed them. */
  driftRepairs: number;
  /** Plugins delivered at a newer revision of their source by a refresh. */
  pluginUpgrades: number;
}

export interface WorkspaceState {
  workspaceId: string;
  status: Status;
  statusSince: string;
  url: string | null;
  deliveryMode: DeliveryMode | null;
  kind: WorkspaceKind;
  runtime: Runtime;
  agentCard: AgentCardSummary | null;
  lastRegisterAt: string | null;
  /**
   * The last heartbeat forwarded to the workflow: its time (the workflow's clock) and the fields the
   * rules read. Heartbeats the workflow did not want are only in the heartbeat ledger, on the
   * database's clock.
   */
  lastHeartbeat: LastHeartbeat | null;
  /**
   * The runtime's active tasks as last reported: by the heartbeat the workflow last received, or
   * by the heartbeat ledger, read when a reconcile's changes call for a restart (an online
   * workspace's heartbeats mostly stay in the ledger). A restart that only loads plugins drains them.
   */
  activeTasks: number;
  /** The liveness contract last published (null before the first write): what the API forwards. */
  livenessContract: PublishedContract | null;
  /**
   * Where this workspace's projection versions start: the workflow's time when it was first
   * started, carried across continue-as-new. A workflow started over (terminated, recreated)
   * starts later, so its writes replace the ones its predecessor made.
   */
  versionBase: number;
  counters: Counters;
  reconcile: ReconcileState;
  /** Per declared plugin that a reconcile worked on: how it got installed, or why it failed. */
  plugins: Record<string, PluginState>;
  /** Declared plugins as of the last reconcile pass. */
  pluginsDeclaredCount: number;
  /** Declared plugins without a tracking row after the last reconcile pass. */
  pluginsPending: number;
  restart: RestartState;
  deadDetection: DeadDetectionState;
  /** Set while an operator holds the workspace (docs/restarts.md). */
  cordon: Cordon | null;
  /** Most recent first, bounded. */
  recentRejections: Rejection[];
  /** Most recent first, bounded. */
  recentTransitions: StatusChange[];
}

export type Event =
  | { type: 'register'; payload: unknown }
  | { type: 'heartbeat'; payload: unknown }
  /**
   * The fleet liveness controller found the lease of the contract `version` expired on the
   * database's clock: silent for `silentForMs`.
   */
  | { type: 'leaseExpired'; version: number; silentForMs: number }
  /** A durable timer fired; deadlines that have passed take effect. */
  | { type: 'deadline' }
  | { type: 'reconcileFinished'; outcome: ReconcileOutcome; error?: string; report?: ReconcileReport }
  | { type: 'restartFinished'; outcome: 'succeeded' | 'failed'; error?: string }
  /** An operator (or another requester) asks for a restart. */
  | { type: 'restartRequested'; reason: string; requester: string }
  | { type: 'pluginsDeclared' }
  /** An operator asks for a reconcile pass (verify, or refresh to take a branch's new head). */
  | { type: 'reconcileRequested'; mode: ReconcileMode; requester: string }
  /** The running pass has diffed (and listed the box): what it will change. */
  | { type: 'reconcilePlanned'; plan: ReconcilePlan }
  | { type: 'probed'; result: ProbeResult }
  /** An operator holds the workspace: nothing automatic restarts or delivers until uncordon. */
  | { type: 'cordon'; reason: string; requester: string }
  /** The hold ends: what it held (a restart, a reconcile pass) runs once. */
  | { type: 'uncordon'; requester: string }
  /** A not-running probe while settling with no recent or fresh heartbeat. */
  | { type: 'strike'; requester: string }
  | { type: 'deadDeclared'; reason: string; requester: string }
  | { type: 'verdict'; verdict: string; detail: string; requester: string }
  | { type: 'deprovision' };

export type Effect =
  /**
   * `holdRepairs`: plugins repaired just before the last restart, not delivered again if they
   * drifted again (see repairsToHold).
   */
  | { type: 'startReconcile'; trigger: string; mode: ReconcileMode; holdRepairs?: string[] }
  /** `restartId` is unique per workspace, so the box restarts at most once per request. */
  | { type: 'restartBox'; restartId: string; reason: string; cause: RestartCause }
  /** Dead: the workspace's instance tokens stop working; the next register mints a new one. */
  | { type: 'revokeTokens'; mintedBefore: string }
  /** Removed: the box's runtime stops for good and the workspace's tokens are revoked. */
  | { type: 'retire' }
  /** Heartbeat silence: run the dead-detection evaluation. */
  | { type: 'evaluate'; requester: string }
  /**
   * Status, URL, mode, holds or liveness contract changed (or a register renewed the lease): the SQL
   * projection and the heartbeat ledger's contract get the final values of this step, in one write,
   * with the status changes it made (each written once to the event outbox). Times cross to the
   * database as ages on the workflow's clock: `leaseAgeMs` since what the workflow itself last
   * knew of the runtime (register, forwarded heartbeat, status change), and `restart.ageMs` since
   * the restart in progress began.
   */
  | {
      type: 'writeProjection';
      status: Status;
      url: string | null;
      statusSince: string;
      version: number;
      deliveryMode: DeliveryMode | null;
      transitions: StatusChange[];
      contract: LivenessContract;
      leaseAgeMs: number;
      restart: { key: string; ageMs: number } | null;
      /** What the fleet's gauges count: cordoned, crash-looping. */
      holds: ProjectedHolds;
    };

/** The holds the projection carries, for the API's fleet gauges. */
export interface ProjectedHolds {
  cordoned: boolean;
  crashLooping: boolean;
}

export interface Transition {
  state: WorkspaceState;
  effects: Effect[];
  /** For an operator command (restartRequested, reconcileRequested, cordon, uncordon): what it did. */
  answer?: CommandAnswer;
}

export const MAX_RECENT = 10;

export function initialState(workspaceId: string, status: InitialStatus, now: number): WorkspaceState {
  return {
    workspaceId,
    status,
    statusSince: new Date(now).toISOString(),
    url: null,
    deliveryMode: null,
    kind: 'workspace',
    runtime: status === 'awaiting_agent' ? 'external' : 'managed',
    agentCard: null,
    lastRegisterAt: null,
    lastHeartbeat: null,
    activeTasks: 0,
    livenessContract: null,
    versionBase: now,
    counters: {
      registers: 0,
      heartbeats: 0,
      rejected: 0,
      reconcilesRequested: 0,
      reconcilesStarted: 0,
      reconcilesCoalesced: 0,
      reconcilesFailed: 0,
      transitions: 0,
      projectionWrites: 0,
      runs: 0,
      pluginsRemoved: 0,
      driftRepairs: 0,
      pluginUpgrades: 0,
    },
    reconcile: {
      running: false,
      followUp: false,
      lastTrigger: null,
      lastStartedAt: null,
      lastFinishedAt: null,
      lastOutcome: null,
      lastError: null,
      mode: 'diff',
      followUpMode: 'diff',
      followUpByOperator: false,
      heldMode: null,
      lastVerifyAt: null,
      plan: null,
      lastChanges: null,
    },
    plugins: {},
    pluginsDeclaredCount: 0,
    pluginsPending: 0,
    restart: {
      inFlight: false,
      followUp: null,
      count: 0,
      lastReason: null,
      lastRequester: null,
      lastStartedAt: null,
      settleUntil: null,
      lastFinishedAt: null,
      lastError: null,
      failures: 0,
      retryAt: null,
      held: null,
      crashes: 0,
      crashLooping: false,
      nextAttemptAt: null,
    },
    deadDetection: { strikes: null, lastProbe: null, lastVerdict: null, deadDeclarations: 0 },
    cordon: null,
    recentRejections: [],
    recentTransitions: [],
  };
}

/**
 * Fills in fields that a state carried from a run of an earlier build may lack; `initialStatus` is the one
 * the workflow was first started in (it says who runs the runtime).
 */
export function upgradeState(carried: WorkspaceState, initialStatus: InitialStatus = 'provisioning'): WorkspaceState {
  const fresh = initialState(carried.workspaceId, initialStatus, Date.parse(carried.statusSince));
  return {
    ...fresh,
    ...carried,
    counters: { ...fresh.counters, ...carried.counters },
    reconcile: { ...fresh.reconcile, ...carried.reconcile },
    restart: { ...fresh.restart, ...carried.restart },
    deadDetection: { ...fresh.deadDetection, ...carried.deadDetection },
  };
}
