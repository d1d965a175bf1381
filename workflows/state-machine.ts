/**
 * The workspace state machine: a pure, deterministic function (state, event, now) → (state, effects).
 *
 * Every status transition of a workspace happens here and nowhere else. When a transition can
 * happen in several places, a trigger wired to one of them is missed by the others (a runtime
 * that only heartbeats never got its plugins). Here the reconcile request is attached to the
 * transition itself, so whichever signal causes it, the reconcile is requested exactly once.
 *
 * No I/O, no clocks, no randomness: `now` is passed in (the workflow's deterministic time).
 */
import type { LifecycleConfig } from './config.js';
import {
  effectiveDeliveryMode,
  parseHeartbeat,
  parseRegister,
  registerUrl,
  type AgentCard,
  type DeliveryMode,
  type HeartbeatPayload,
  type WorkspaceKind,
} from './payloads.js';

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
const reconcileModes: readonly ReconcileMode[] = ['diff', 'verify', 'refresh'];
function deeperMode(a: ReconcileMode, b: ReconcileMode): ReconcileMode {
  return reconcileModes.indexOf(a) >= reconcileModes.indexOf(b) ? a : b;
}

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

export interface RestartState {
  inFlight: boolean;
  /** A request arrived while one was in flight: exactly one more restart follows. */
  followUp: { reason: string; requester: string } | null;
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
  /** Passes actually started; requested minus coalesced. */
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
  /** The last heartbeat forwarded to the workflow: its time and the fields the rules read. */
  lastHeartbeat: LastHeartbeat | null;
  /**
   * The latest heartbeat time known, forwarded or only recorded in the heartbeat ledger (the API
   * may coalesce heartbeats that change nothing, even before one was forwarded). Liveness reads
   * this: lastHeartbeatAt().
   */
  heartbeatSeenAt: string | null;
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
  /** Most recent first, bounded. */
  recentRejections: Rejection[];
  /** Most recent first, bounded. */
  recentTransitions: StatusChange[];
}

export type Event =
  | { type: 'register'; payload: unknown }
  /** `beats`: the acknowledged heartbeats this one stands for (itself and those coalesced before it). */
  | { type: 'heartbeat'; payload: unknown; beats?: number }
  /** The heartbeat ledger's last-seen time, read when a liveness rule decides. */
  | { type: 'heartbeatsSeen'; lastSeenAt: string | null }
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
  | { type: 'restartBox'; restartId: string; reason: string }
  /** Dead: the workspace's instance tokens stop working; the next register mints a new one. */
  | { type: 'revokeTokens'; mintedBefore: string }
  /** Removed: the box's runtime stops for good and the workspace's tokens are revoked. */
  | { type: 'retire' }
  /** Heartbeat silence: run the dead-detection evaluation. */
  | { type: 'evaluate'; requester: string }
  /** Status or URL changed: the SQL projection gets the final values of this step. */
  | {
      type: 'writeProjection';
      status: Status;
      url: string | null;
      statusSince: string;
      version: number;
      deliveryMode: DeliveryMode | null;
    };

export interface Transition {
  state: WorkspaceState;
  effects: Effect[];
}

export const MAX_RECENT = 10;

export function initialState(workspaceId: string, status: InitialStatus, now: number): WorkspaceState {
  return {
    workspaceId,
    status,
    statusSince: iso(now),
    url: null,
    deliveryMode: null,
    kind: 'workspace',
    runtime: status === 'awaiting_agent' ? 'external' : 'managed',
    agentCard: null,
    lastRegisterAt: null,
    lastHeartbeat: null,
    heartbeatSeenAt: null,
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
    },
    deadDetection: { strikes: null, lastProbe: null, lastVerdict: null, deadDeclarations: 0 },
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

/** The wait before asking a failed restart again: 1 min, doubling per failure in a row, at most 30 min. */
export function restartRetryDelayMs(failures: number): number {
  return Math.min(30 * 60_000, 60_000 * 2 ** Math.max(0, failures - 1));
}

export function transition(state: WorkspaceState, event: Event, now: number, config: LifecycleConfig): Transition {
  const draft = new Draft(state, now, config);
  switch (event.type) {
    case 'register':
      onRegister(draft, event.payload);
      break;
    case 'heartbeat':
      onHeartbeat(draft, event.payload, config, event.beats);
      break;
    case 'heartbeatsSeen':
      onHeartbeatsSeen(draft, event.lastSeenAt);
      break;
    case 'deadline':
      onDeadline(draft, config);
      break;
    case 'reconcileFinished':
      onReconcileFinished(draft, event.outcome, event.error, event.report);
      break;
    case 'restartFinished':
      onRestartFinished(draft, event.outcome, event.error);
      break;
    case 'restartRequested':
      draft.requestRestart(event.reason, event.requester);
      break;
    case 'pluginsDeclared':
      // A box that is not up will reconcile on its way into online anyway.
      if (draft.state.status === 'online' || draft.state.status === 'degraded')
        draft.requestReconcile('plugins declared');
      break;
    case 'reconcileRequested':
      if (draft.state.status === 'removed') break;
      draft.requestReconcile(`requested by ${event.requester}`, event.mode);
      break;
    case 'reconcilePlanned':
      if (!draft.state.reconcile.running) break;
      draft.state.reconcile.plan = event.plan;
      // Pending until the pass finishes: what it delivers, removes and repairs (a refresh may find nothing newer).
      draft.state.pluginsPending = event.plan.deliveries + event.plan.removals + event.plan.repairs;
      break;
    case 'probed':
      draft.state.deadDetection.lastProbe = { result: event.result, at: draft.at };
      if (event.result === 'running') draft.state.deadDetection.strikes = null;
      break;
    case 'strike':
      onStrike(draft, event.requester, config);
      break;
    case 'deadDeclared':
      draft.declareDead(event.reason, event.requester);
      break;
    case 'verdict':
      draft.state.deadDetection.lastVerdict = {
        verdict: event.verdict,
        detail: event.detail,
        requester: event.requester,
        at: draft.at,
      };
      break;
    case 'deprovision':
      if (draft.state.status === 'removed') break;
      draft.moveTo('removed', 'deprovision');
      draft.effects.push({ type: 'retire' });
      break;
  }
  const next = draft.state;
  const modeChanged = next.deliveryMode !== state.deliveryMode;
  if (next.status !== state.status || next.url !== state.url || modeChanged) {
    next.counters.projectionWrites++;
    draft.effects.push({
      type: 'writeProjection',
      status: next.status,
      url: next.url,
      statusSince: next.statusSince,
      // Both counts only grow, so the sum grows with every write.
      version: next.counters.transitions + next.counters.projectionWrites,
      deliveryMode: next.deliveryMode,
    });
  }
  return { state: next, effects: draft.effects };
}

/** The earliest moment a durable timer must wake the workflow, or null when no deadline applies. */
export function nextDeadline(state: WorkspaceState, config: LifecycleConfig): number | null {
  const deadlines = [statusDeadline(state, config), restartRetryDeadline(state), resyncDeadline(state, config)].filter(
    (deadline) => deadline !== null,
  );
  return deadlines.length === 0 ? null : Math.min(...deadlines);
}

/**
 * The periodic resync (a controller's resync): a verify pass every `resyncPeriodMs` (0: never)
 * while the runtime is up, counted from the last one asked for (or the last pass, before any).
 */
function resyncDeadline(state: WorkspaceState, config: LifecycleConfig): number | null {
  if (config.resyncPeriodMs <= 0) return null;
  if (state.status !== 'online' && state.status !== 'degraded') return null;
  if (state.runtime === 'external') return null;
  const since = state.reconcile.lastVerifyAt ?? state.reconcile.lastStartedAt;
  return since === null ? null : Date.parse(since) + config.resyncPeriodMs;
}

/** Whether the liveness TTL has passed for a live workspace, by what the state knows so far. */
export function livenessExpired(state: WorkspaceState, now: number, config: LifecycleConfig): boolean {
  return (state.status === 'online' || state.status === 'degraded') && now >= lastSeen(state) + config.livenessTtlMs;
}

/** The deadline of the current status: provisioning timeout, liveness TTL, or offline too long. */
function statusDeadline(state: WorkspaceState, config: LifecycleConfig): number | null {
  switch (state.status) {
    case 'provisioning':
      return Date.parse(state.statusSince) + config.provisioningTimeoutMs;
    case 'online':
    case 'degraded':
      return lastSeen(state) + config.livenessTtlMs;
    case 'offline':
      // A restart in flight (or owed) already answers the silence; its end sets a new status.
      return state.restart.inFlight ? null : Date.parse(state.statusSince) + config.livenessTtlMs;
    default:
      return null;
  }
}

function restartRetryDeadline(state: WorkspaceState): number | null {
  const { retryAt, inFlight } = state.restart;
  return retryAt !== null && !inFlight ? Date.parse(retryAt) : null;
}

/** Mutable working copy for one transition; the input state is never mutated. */
class Draft {
  readonly state: WorkspaceState;
  readonly effects: Effect[] = [];

  constructor(
    previous: WorkspaceState,
    readonly now: number,
    readonly config: LifecycleConfig,
  ) {
    this.state = {
      ...previous,
      counters: { ...previous.counters },
      reconcile: { ...previous.reconcile },
      restart: { ...previous.restart },
      deadDetection: { ...previous.deadDetection },
    };
  }

  get at(): string {
    return iso(this.now);
  }

  /** The runtime is someone else's to run. */
  get external(): boolean {
    return this.state.runtime === 'external';
  }

  /**
   * Changes status and attaches the reconcile to every transition into online: the runtime is
   * (back) up, so the pass also verifies the tracked plugins on its box.
   */
  moveTo(to: Status, cause: string): void {
    const from = this.state.status;
    if (from === to) return;
    this.state.status = to;
    this.state.statusSince = this.at;
    this.state.counters.transitions++;
    this.state.recentTransitions = [{ from, to, cause, at: this.at }, ...this.state.recentTransitions].slice(
      0,
      MAX_RECENT,
    );
    if (to === 'online') this.requestReconcile(`${from}→online (${cause})`, 'verify');
  }

  requestReconcile(trigger: string, mode: ReconcileMode = 'diff'): void {
    // The service has no box to deliver to: an external runtime loads its own plugins.
    if (this.external) return;
    const reconcile = this.state.reconcile;
    this.state.counters.reconcilesRequested++;
    // Counted from the request, so a resync asked while a pass runs is not asked again meanwhile.
    if (mode !== 'diff') reconcile.lastVerifyAt = this.at;
    if (reconcile.running) {
      reconcile.followUp = true;
      reconcile.followUpMode = deeperMode(reconcile.followUpMode, mode);
      this.state.counters.reconcilesCoalesced++;
      return;
    }
    this.startReconcile(trigger, mode);
  }

  startReconcile(trigger: string, mode: ReconcileMode = 'diff'): void {
    const reconcile = this.state.reconcile;
    reconcile.running = true;
    reconcile.lastTrigger = trigger;
    reconcile.lastStartedAt = this.at;
    this.state.counters.reconcilesStarted++;
    reconcile.mode = mode;
    reconcile.plan = null;
    const holdRepairs = repairsToHold(this.state);
    this.effects.push({ type: 'startReconcile', trigger, mode, ...(holdRepairs.length > 0 ? { holdRepairs } : {}) });
  }

  /**
   * The one restart operation, whoever asks: stamps the start, clears the URL, goes
   * provisioning and restarts the box. A request while one is in flight becomes exactly one
   * follow-up; none is dropped.
   */
  requestRestart(reason: string, requester: string): void {
    const restart = this.state.restart;
    if (this.state.status === 'removed') return;
    if (this.external) return this.reject('restart', `${reason}: the runtime is external; restart it where it runs`);
    if (restart.inFlight) {
      restart.followUp = { reason, requester };
      return;
    }
    restart.inFlight = true;
    restart.count++;
    restart.lastReason = reason;
    restart.lastRequester = requester;
    restart.lastStartedAt = this.at;
    restart.settleUntil = iso(this.now + this.config.settleWindowMs);
    this.state.url = null;
    this.moveTo('provisioning', `restart: ${reason}`);
    this.effects.push({ type: 'restartBox', restartId: `restart-${restart.count}`, reason });
  }

  /**
   * The box is dead: offline (unless removed or provisioning), URL cleared, tokens revoked,
   * strikes reset, and a restart that is never dropped (it coalesces if one is in flight).
   */
  declareDead(reason: string, requester: string): void {
    const state = this.state;
    if (state.status === 'removed' || this.external) return;
    state.deadDetection.strikes = null;
    state.deadDetection.deadDeclarations++;
    if (state.status !== 'provisioning') this.moveTo('offline', `dead: ${reason}`);
    state.url = null;
    this.effects.push({ type: 'revokeTokens', mintedBefore: this.at });
    this.requestRestart(`dead: ${reason}`, requester);
  }

  reject(signal: SignalName | 'restart', reason: string): void {
    this.state.counters.rejected++;
    this.state.recentRejections = [{ signal, reason, at: this.at }, ...this.state.recentRejections].slice(
      0,
      MAX_RECENT,
    );
  }
}

function onRegister(draft: Draft, payload: unknown): void {
  const state = draft.state;
  const parsed = parseRegister(payload);
  if (!parsed.ok) return draft.reject('register', parsed.reason);
  const register = parsed.value;
  if (register.id !== state.workspaceId) {
    return draft.reject('register', `id ${JSON.stringify(register.id)} does not match workspace ${state.workspaceId}`);
  }
  if (state.status === 'removed') return draft.reject('register', 'workspace is removed; register cannot resurrect it');

  const deliveryMode = effectiveDeliveryMode(register.delivery_mode, state.deliveryMode, draft.external);
  const { url } = registerUrl(register);
  if (deliveryMode === 'push' && url === '') {
    return draft.reject('register', 'url is required for push-mode workspaces (set url or agent_card.url)');
  }

  state.counters.registers++;
  state.lastRegisterAt = draft.at;
  state.deliveryMode = deliveryMode;
  state.kind = register.kind ?? state.kind;
  state.url = url === '' ? null : url;
  state.agentCard = summarizeCard(register.agent_card);
  // The new runtime checked in: a failed restart need not be asked again, unless it was to load
  // delivered plugins (only a restart loads them).
  if (state.restart.retryAt !== null && state.restart.lastRequester !== 'reconcile') {
    state.restart.retryAt = null;
    state.restart.failures = 0;
  }
  // A register is a fresh runtime boot: whatever the status was, the runtime is up. Its box may
  // have been rebuilt or changed meanwhile: the pass coming online verifies the tracked plugins
  // on it. Already online, the register still asks for that, unless a verify was asked within
  // the settle window (the same boot's register, repeated).
  const wasOnline = state.status === 'online';
  draft.moveTo('online', 'register');
  const lastVerify = state.reconcile.lastVerifyAt === null ? null : Date.parse(state.reconcile.lastVerifyAt);
  const repeated = lastVerify !== null && draft.now - lastVerify < draft.config.settleWindowMs;
  if (wasOnline && !repeated) draft.requestReconcile('register (runtime booted)', 'verify');
}

function onHeartbeat(draft: Draft, payload: unknown, config: LifecycleConfig, beats = 1): void {
  const state = draft.state;
  const parsed = parseHeartbeat(payload);
  if (!parsed.ok) return draft.reject('heartbeat', parsed.reason);
  const beat = parsed.value;
  if (beat.workspace_id !== state.workspaceId) {
    return draft.reject(
      'heartbeat',
      `workspace_id ${JSON.stringify(beat.workspace_id)} does not match workspace ${state.workspaceId}`,
    );
  }
  if (state.status === 'removed') return draft.reject('heartbeat', 'workspace is removed');

  state.counters.heartbeats += Number.isSafeInteger(beats) && beats > 0 ? beats : 1;
  state.lastHeartbeat = recordHeartbeat(beat, state.lastHeartbeat, draft.at);
  state.heartbeatSeenAt = draft.at;
  if (beat.agent_card && state.agentCard === null) state.agentCard = summarizeCard(beat.agent_card);

  // Any heartbeat proves the runtime is up: every not-live status comes online; but while a
  // restart is in flight the heartbeat may be the old runtime's, which proves nothing.
  const staleRisk = state.restart.inFlight;
  if (state.status !== 'online' && state.status !== 'degraded' && !staleRisk) draft.moveTo('online', 'heartbeat');

  const health = assessHealth(state.lastHeartbeat, config);
  if (state.status === 'online' && health.degradeReason !== null) {
    draft.moveTo('degraded', health.degradeReason);
  } else if (state.status === 'degraded' && health.recovered) {
    draft.moveTo('online', 'heartbeat healthy again');
  }
}

/**
 * Heartbeats the API acknowledged without forwarding them (each had the signature of the last
 * forwarded one: same health class, runtime state and card) still count for liveness: the last
 * heartbeat's time moves up to the ledger's. Nothing else changes; the next forward carries their
 * count.
 */
function onHeartbeatsSeen(draft: Draft, lastSeenAt: string | null): void {
  if (lastSeenAt === null || Number.isNaN(Date.parse(lastSeenAt))) return;
  const known = lastHeartbeatAt(draft.state);
  if (known !== null && Date.parse(lastSeenAt) <= known) return;
  // Never past the workflow's own clock: a ledger clock running ahead would stretch liveness.
  draft.state.heartbeatSeenAt = iso(Math.min(Date.parse(lastSeenAt), draft.now));
}

/** The latest heartbeat time known (forwarded, or in the ledger), in ms; null before any. */
export function lastHeartbeatAt(state: WorkspaceState): number | null {
  const times = [state.lastHeartbeat?.at, state.heartbeatSeenAt].flatMap((at) =>
    typeof at === 'string' ? [Date.parse(at)] : [],
  );
  return times.length === 0 ? null : Math.max(...times);
}

function onDeadline(draft: Draft, config: LifecycleConfig): void {
  const state = draft.state;
  const retry = restartRetryDeadline(state);
  if (retry !== null && draft.now >= retry) {
    const restart = state.restart;
    restart.retryAt = null;
    draft.requestRestart(
      `retry ${restart.failures} after a failed restart (${restart.lastError ?? '?'}): ${restart.lastReason ?? ''}`,
      restart.lastRequester ?? 'restart-retry',
    );
  }
  const resync = resyncDeadline(state, config);
  if (resync !== null && draft.now >= resync) draft.requestReconcile('periodic resync', 'verify');
  const deadline = statusDeadline(state, config);
  if (deadline === null || draft.now < deadline) return;
  if (state.status === 'provisioning') {
    draft.moveTo('failed', `still provisioning after ${seconds(config.provisioningTimeoutMs)}`);
  } else if (state.status === 'offline') {
    // Offline for a TTL and still silent: the box may run, its runtime does not answer.
    draft.requestRestart(`offline and silent for ${seconds(config.livenessTtlMs)} more`, 'watchdog');
  } else if (draft.external) {
    // Nothing to probe or restart: the workspace waits for its agent to check in again.
    draft.moveTo('awaiting_agent', `no heartbeat for ${seconds(config.livenessTtlMs)}`);
  } else {
    draft.moveTo('offline', `no heartbeat for ${seconds(config.livenessTtlMs)}`);
    draft.effects.push({ type: 'evaluate', requester: 'watchdog' });
  }
}

function onReconcileFinished(
  draft: Draft,
  outcome: ReconcileOutcome,
  error: string | undefined,
  report: ReconcileReport | undefined,
): void {
  const state = draft.state;
  const reconcile = state.reconcile;
  if (!reconcile.running) return; // nothing was running: a stray completion changes nothing
  reconcile.running = false;
  reconcile.lastFinishedAt = draft.at;
  reconcile.lastOutcome = outcome;
  reconcile.lastError = outcome === 'failed' ? (error ?? 'unknown error') : null;
  if (outcome === 'failed') state.counters.reconcilesFailed++;
  if (report) {
    recordPluginOutcomes(draft, report);
    const changed = report.outcomes.filter((o) =>
      o.status === 'installed' ? o.via === 'delivered' : o.status === 'removed' || o.delivered === true,
    ).length;
    // One restart per reconcile batch, however many plugins were delivered or removed.
    if (changed > 0) draft.requestRestart(restartReason(report, changed), 'reconcile');
  }
  const owed = reconcile.followUp;
  const owedMode = reconcile.followUpMode;
  reconcile.followUp = false;
  reconcile.followUpMode = 'diff';
  reconcile.plan = null;
  // A removed workspace has no box left to converge.
  if (owed && state.status !== 'removed') draft.startReconcile('follow-up of coalesced triggers', owedMode);
}

function restartReason(report: ReconcileReport, changed: number): string {
  const removed = report.outcomes.filter((o) => o.status === 'removed').length;
  return removed === 0
    ? `reconcile delivered ${changed} plugin(s)`
    : `reconcile delivered ${changed - removed} and removed ${removed} plugin(s)`;
}

function recordPluginOutcomes(draft: Draft, report: ReconcileReport): void {
  // A plugin no longer declared leaves the state, so it stays as small as the declaration.
  const declared = new Set(report.declaredNames);
  const removed = new Set(report.outcomes.flatMap((o) => (o.status === 'removed' ? [o.name] : [])));
  const plugins = Object.fromEntries(
    Object.entries(draft.state.plugins).filter(([name]) => declared.has(name) && !removed.has(name)),
  );
  const changes = { delivered: 0, removed: 0, repaired: 0, upgraded: 0 };
  for (const outcome of report.outcomes) {
    const attempts = (plugins[outcome.name]?.attempts ?? 0) + 1;
    if (outcome.status === 'removed') {
      changes.removed++;
      continue;
    }
    if (outcome.status === 'failed') {
      plugins[outcome.name] = {
        status: 'failed',
        via: null,
        revision: null,
        error: outcome.error,
        attempts,
        updatedAt: draft.at,
      };
      continue;
    }
    plugins[outcome.name] = {
      status: 'installed',
      via: outcome.via,
      revision: outcome.revision,
      error: null,
      attempts,
      updatedAt: draft.at,
      change: outcome.change ?? null,
    };
    if (outcome.change === 'repaired') changes.repaired++;
    else if (outcome.change === 'upgraded') changes.upgraded++;
    else if (outcome.via === 'delivered') changes.delivered++;
  }
  draft.state.plugins = plugins;
  draft.state.pluginsDeclaredCount = report.declared;
  // Whatever did not succeed is still owed (a failed removal too).
  draft.state.pluginsPending = report.outcomes.filter((o) => o.status === 'failed').length;
  const counters = draft.state.counters;
  counters.pluginsRemoved += changes.removed;
  counters.driftRepairs += changes.repaired;
  counters.pluginUpgrades += changes.upgraded;
  draft.state.reconcile.lastChanges = changes;
}

function onRestartFinished(draft: Draft, outcome: 'succeeded' | 'failed', error: string | undefined): void {
  const restart = draft.state.restart;
  if (!restart.inFlight) return;
  restart.inFlight = false;
  restart.lastFinishedAt = draft.at;
  restart.lastError = outcome === 'failed' ? (error ?? 'unknown error') : null;
  const retry = outcome === 'failed' && draft.state.status !== 'removed';
  restart.failures = retry ? restart.failures + 1 : 0;
  restart.retryAt = retry ? iso(draft.now + restartRetryDelayMs(restart.failures)) : null;
  const followUp = restart.followUp;
  restart.followUp = null;
  if (followUp) draft.requestRestart(followUp.reason, followUp.requester);
}

/**
 * Strikes within the window declare a settling box dead (2 within 30 s by default): one
 * not-running probe while a restarted box settles proves nothing, two in a row do.
 */
function onStrike(draft: Draft, requester: string, config: LifecycleConfig): void {
  if (draft.state.status === 'removed' || draft.external) return;
  const detection = draft.state.deadDetection;
  const current = detection.strikes;
  const windowOpen = current !== null && draft.now - Date.parse(current.firstAt) <= config.strikeWindowMs;
  detection.strikes = windowOpen
    ? { ...current, count: current.count + 1, lastAt: draft.at }
    : { count: 1, firstAt: draft.at, lastAt: draft.at };
  if (detection.strikes.count >= config.strikeThreshold) {
    draft.declareDead(
      `${detection.strikes.count} not-running probes within ${seconds(config.strikeWindowMs)} while settling`,
      requester,
    );
  }
}

/**
 * Plugins a pass repaired right before the restart that followed it. If the box lost them again
 * by the first pass after that restart, delivering once more would restart the box in a loop:
 * they fail instead (the box does not keep them), and the next resync or operator request tries
 * again.
 */
export function repairsToHold(state: WorkspaceState): string[] {
  const restarted = state.restart.lastStartedAt;
  // Only the first pass after that restart: once one finished, a later loss is new drift.
  const finished = state.reconcile.lastFinishedAt;
  if (restarted === null || (finished !== null && finished > restarted)) return [];
  return Object.entries(state.plugins)
    .filter(([, plugin]) => plugin.change === 'repaired' && plugin.via === 'delivered' && plugin.updatedAt >= restarted)
    .map(([name]) => name)
    .sort();
}

/** Pure reads the dead-detection evaluation needs (its steps 2 and 4). */
export function settleDeadline(state: WorkspaceState, config: LifecycleConfig): number | null {
  const started = state.restart.lastStartedAt;
  return started === null ? null : Date.parse(started) + config.settleWindowMs;
}

export function isSettling(state: WorkspaceState, now: number, config: LifecycleConfig): boolean {
  const deadline = settleDeadline(state, config);
  return deadline !== null && now < deadline;
}

export function hasRecentHeartbeat(state: WorkspaceState, now: number, config: LifecycleConfig): boolean {
  const at = lastHeartbeatAt(state);
  return at !== null && now - at <= config.recentHeartbeatMs;
}

/** A heartbeat and a register (the new runtime's) since the last restart started. */
export function hasFreshHeartbeat(state: WorkspaceState): boolean {
  const started = state.restart.lastStartedAt;
  const heartbeat = lastHeartbeatAt(state);
  if (started === null || heartbeat === null) return false;
  const since = (at: string | null): boolean => at !== null && Date.parse(at) > Date.parse(started);
  return heartbeat > Date.parse(started) && since(state.lastRegisterAt);
}

interface Health {
  degradeReason: string | null;
  recovered: boolean;
}

/**
 * Health from the last heartbeat: wedged, or an error rate at or above the degrade threshold
 * (unless the runtime manages its own status), degrades; recovery needs the rate below the
 * recover threshold. Thresholds from config.
 */
export function assessHealth(beat: LastHeartbeat, config: LifecycleConfig): Health {
  if (beat.runtimeState === 'wedged') return { degradeReason: 'runtime reports wedged', recovered: false };
  if (!beat.managesOwnStatus && beat.errorRate >= config.degradeErrorRate) {
    return { degradeReason: `error rate ${beat.errorRate} ≥ ${config.degradeErrorRate}`, recovered: false };
  }
  const recovered = !beat.managesOwnStatus && beat.errorRate < config.recoverErrorRate && beat.runtimeState === '';
  return { degradeReason: null, recovered };
}

export interface HeartbeatSignature {
  signature: string;
  /** It would degrade an online workspace. */
  degrades: boolean;
}

/**
 * What the rules read from a heartbeat besides its time: its health class under the degrade and
 * recover thresholds (assessHealth), its runtime state, whether the runtime manages its own
 * status, and its agent card. From any status, two heartbeats with one signature lead to the
 * same transitions; so the API forwards a heartbeat whose signature differs from the last one
 * forwarded at once, and may coalesce the others.
 */
export function heartbeatSignature(beat: HeartbeatPayload, config: LifecycleConfig): HeartbeatSignature {
  const recorded = recordHeartbeat(beat, null, '');
  const health = assessHealth(recorded, config);
  const degrades = health.degradeReason !== null;
  const healthClass = degrades ? 'degrades' : health.recovered ? 'recovers' : 'holds';
  const card = beat.agent_card ? summarizeCard(beat.agent_card) : null;
  return {
    signature: JSON.stringify([healthClass, recorded.runtimeState, recorded.managesOwnStatus, card]),
    degrades,
  };
}

function recordHeartbeat(beat: HeartbeatPayload, previous: LastHeartbeat | null, at: string): LastHeartbeat {
  return {
    at,
    errorRate: beat.error_rate,
    sampleError: beat.sample_error,
    activeTasks: beat.active_tasks,
    currentTask: beat.current_task,
    uptimeSeconds: beat.uptime_seconds,
    // 0 means "no update" on the wire: keep the last known monthly spend.
    monthlySpend: beat.monthly_spend > 0 ? beat.monthly_spend : (previous?.monthlySpend ?? 0),
    runtimeState: beat.runtime_state,
    managesOwnStatus: beat.runtime_metadata?.capabilities?.['status_mgmt'] === true,
  };
}

function summarizeCard(card: AgentCard): AgentCardSummary {
  return {
    name: card.name ?? null,
    description: card.description ?? null,
    version: card.version ?? null,
    skills: card.skills?.length ?? 0,
  };
}

function lastSeen(state: WorkspaceState): number {
  const register = state.lastRegisterAt === null ? 0 : Date.parse(state.lastRegisterAt);
  const heartbeat = lastHeartbeatAt(state) ?? 0;
  return Math.max(register, heartbeat, Date.parse(state.statusSince));
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function seconds(ms: number): string {
  return `${ms / 1000}s`;
}
