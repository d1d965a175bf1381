/**
 * Liveness: what the runtime's calls say. A register or any heartbeat brings the workspace
 * online (a heartbeat while a restart is in flight may be the old runtime's and proves nothing);
 * heartbeats degrade and recover it by their health; silence past the liveness TTL (found by the
 * fleet liveness controller) takes it offline, provisioning past its timeout fails it. The
 * liveness contract says which heartbeats the workflow wants forwarded (docs/fleet-liveness.md).
 */
import type { LifecycleConfig } from '../config.js';
import {
  effectiveDeliveryMode,
  parseHeartbeat,
  parseRegister,
  registerUrl,
  type AgentCard,
  type HeartbeatPayload,
} from '../payloads.js';
import { seconds, type Draft } from './draft.js';
import { requestReconcile } from './reconcile.js';
import { dropMootHeldRestart, isDraining, isSettling, requestRestart, settleDeadline } from './restart.js';
import type { AgentCardSummary, HeartbeatWant, LastHeartbeat, LivenessContract, WorkspaceState } from './types.js';

/** A runtime checked in (it booted): its URL, card and delivery mode are recorded, and it is online. */
export function onRegister(draft: Draft, payload: unknown): void {
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
  dropMootHeldRestart(draft);
  // A register is a fresh runtime boot: whatever the status was, the runtime is up. Its box may
  // have been rebuilt or changed meanwhile: the pass coming online (transition) verifies the
  // tracked plugins on it. Already online, the register still asks for that, unless a verify was
  // asked within the settle window (the same boot's register, repeated).
  const wasOnline = state.status === 'online';
  draft.moveTo('online', 'register');
  const lastVerify = state.reconcile.lastVerifyAt === null ? null : Date.parse(state.reconcile.lastVerifyAt);
  const repeated = lastVerify !== null && draft.now - lastVerify < draft.config.settleWindowMs;
  if (wasOnline && !repeated) requestReconcile(draft, 'register (runtime booted)', 'verify');
}

/** A heartbeat: recorded, and the status follows from it and the runtime's health. */
export function onHeartbeat(draft: Draft, payload: unknown, config: LifecycleConfig): void {
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

  state.counters.heartbeats++;
  state.lastHeartbeat = recordHeartbeat(beat, state.lastHeartbeat, draft.at);
  state.activeTasks = state.lastHeartbeat.activeTasks;
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
 * The fleet liveness controller found the lease expired on the database's clock. A lease of a
 * contract older than the one last published is stale: the workspace has moved on. Otherwise
 * the workflow's own clock decides with it: if the workflow holds a later sign of life than the
 * ledger (a forwarded heartbeat the ledger missed), the lease is published again from it;
 * if not, silence takes effect: a live workspace goes offline and is evaluated (an external one
 * awaits its agent), one offline and silent a TTL more has its box restarted.
 */
export function onLeaseExpired(draft: Draft, version: number): void {
  const state = draft.state;
  const config = draft.config;
  const published = state.livenessContract;
  if (published === null || version !== published.version) return;
  const deadline = leaseDeadline(state, config);
  if (deadline === null) return;
  if (draft.now < deadline) {
    draft.republish = true;
    return;
  }
  if (state.status === 'offline') {
    // Offline for a TTL and still silent: the box may run, its runtime does not answer.
    requestRestart(draft, `offline and silent for ${seconds(config.livenessTtlMs)} more`, 'watchdog', 'silent');
  } else if (draft.external) {
    // Nothing to probe or restart: the workspace waits for its agent to check in again.
    draft.moveTo('awaiting_agent', `no heartbeat for ${seconds(config.livenessTtlMs)}`);
  } else {
    draft.moveTo('offline', `no heartbeat for ${seconds(config.livenessTtlMs)}`);
    draft.effects.push({ type: 'evaluate', requester: 'watchdog' });
  }
}

/** A deadline fired: provisioning past its timeout fails. */
export function onStatusDeadline(draft: Draft): void {
  const state = draft.state;
  const deadline = statusDeadline(state, draft.config);
  if (deadline === null || draft.now < deadline) return;
  draft.moveTo('failed', `still provisioning after ${seconds(draft.config.provisioningTimeoutMs)}`);
}

/**
 * The deadlines on the workflow's own timers: the provisioning timeout, and the end of a settle
 * window while the want waits for the new runtime's first heartbeat (the want changes then).
 * Silence is the fleet liveness controller's: no timer per live workspace.
 */
export function statusDeadline(state: WorkspaceState, config: LifecycleConfig): number | null {
  if (state.status === 'provisioning') return Date.parse(state.statusSince) + config.provisioningTimeoutMs;
  return null;
}

/**
 * When the settle window's end changes the want (see livenessContract), or null: only while the
 * published want is still the window's (`any` on a live workspace), so once the end republished
 * it the deadline is gone and the timer is not armed again.
 */
export function wantDeadline(state: WorkspaceState, config: LifecycleConfig): number | null {
  const live = state.status === 'online' || state.status === 'degraded';
  const settleEnd = settleDeadline(state, config);
  const waiting = live && state.livenessContract?.want === 'any' && !heartbeatSinceRestart(state);
  return waiting && settleEnd !== null ? settleEnd : null;
}

/**
 * When silence past the liveness TTL takes effect by what the workflow itself knows, for a
 * workspace whose lease is watched: a live one a TTL after its last sign of life, an offline one a
 * TTL after it went offline (a heartbeat would have brought it online); null when not watched.
 */
export function leaseDeadline(state: WorkspaceState, config: LifecycleConfig): number | null {
  switch (state.status) {
    case 'online':
    case 'degraded':
      return lastSignOfLife(state) + config.livenessTtlMs;
    case 'offline':
      // A restart in flight or held already answers the silence; its end sets a new status.
      return state.restart.inFlight || state.restart.held !== null
        ? null
        : Date.parse(state.statusSince) + config.livenessTtlMs;
    default:
      return null;
  }
}

/**
 * The contract the workflow publishes for its state at `now` (docs/fleet-liveness.md): a live
 * workspace wants what moves it between online and degraded, and while a settle window waits for
 * the new runtime's first heartbeat, any heartbeat; every other status wants the next heartbeat,
 * which brings it online, unless a restart is in flight (it may be the old runtime's). While a
 * held restart drains, every heartbeat is wanted: the one reporting no active task releases it.
 */
export function livenessContract(state: WorkspaceState, now: number, config: LifecycleConfig): LivenessContract {
  const settlingForHeartbeat =
    (isSettling(state, now, config) && !heartbeatSinceRestart(state)) || isDraining(state, now, config);
  let want: HeartbeatWant;
  if (state.status === 'removed') want = 'none';
  else if (state.status === 'online') want = settlingForHeartbeat ? 'any' : 'degrading';
  else if (state.status === 'degraded') want = settlingForHeartbeat ? 'any' : 'recovering';
  else want = state.restart.inFlight ? 'none' : 'any';
  return {
    want,
    degradeErrorRate: config.degradeErrorRate,
    recoverErrorRate: config.recoverErrorRate,
    hasCard: state.agentCard !== null,
    leaseWatched: leaseDeadline(state, config) !== null,
    leaseTtlMs: config.livenessTtlMs,
  };
}

export function sameContract(a: LivenessContract, b: LivenessContract): boolean {
  return (
    a.want === b.want &&
    a.degradeErrorRate === b.degradeErrorRate &&
    a.recoverErrorRate === b.recoverErrorRate &&
    a.hasCard === b.hasCard &&
    a.leaseWatched === b.leaseWatched &&
    a.leaseTtlMs === b.leaseTtlMs
  );
}

/**
 * What the ledger reads from a heartbeat: for the forward rule, its health facts and whether it
 * carries an agent card; and the active tasks it reports, which the ledger keeps.
 */
export interface HeartbeatFacts extends HealthFacts {
  bringsCard: boolean;
  activeTasks: number;
}

export function heartbeatFacts(beat: HeartbeatPayload): HeartbeatFacts {
  const { errorRate, runtimeState, managesOwnStatus } = recordHeartbeat(beat, null, '');
  return {
    errorRate,
    runtimeState,
    managesOwnStatus,
    bringsCard: beat.agent_card !== undefined,
    activeTasks: beat.active_tasks,
  };
}

/** A ledger row's contract as the forward rule reads it. */
export interface ContractRow {
  want: HeartbeatWant;
  wantVersion: number;
  /** The highest contract version a wanted heartbeat was delivered for. */
  deliveredVersion: number;
  degradeErrorRate: number;
  recoverErrorRate: number;
  hasCard: boolean;
}

/**
 * Whether the API forwards this heartbeat (the SQL function heartbeat_wanted is the same rule,
 * tested equal): the workflow has not yet been delivered one for this contract, and this one is
 * what the contract wants, or brings the first agent card. Each wanted heartbeat changes the
 * contract it was wanted under, so the next contract (a new version) says what is wanted after it.
 */
export function heartbeatWanted(row: ContractRow, beat: HeartbeatFacts): boolean {
  if (row.deliveredVersion >= row.wantVersion) return false;
  if (beat.bringsCard && !row.hasCard) return true;
  const health = assessHealth(beat, row);
  switch (row.want) {
    case 'any':
      return true;
    case 'degrading':
      return health.degradeReason !== null;
    case 'recovering':
      return health.recovered;
    case 'none':
      return false;
  }
}

/** The forwarded heartbeat's time (the workflow's clock), in ms; null before any. */
export function lastHeartbeatAt(state: WorkspaceState): number | null {
  return state.lastHeartbeat === null ? null : Date.parse(state.lastHeartbeat.at);
}

/** A forwarded heartbeat within the "recent" window, on the workflow's clock. */
export function hasRecentHeartbeat(state: WorkspaceState, now: number, config: LifecycleConfig): boolean {
  const at = lastHeartbeatAt(state);
  return at !== null && now - at <= config.recentHeartbeatMs;
}

/** A register since the last restart started (the new runtime checked in). */
export function registeredSinceRestart(state: WorkspaceState): boolean {
  const started = state.restart.lastStartedAt;
  return started !== null && state.lastRegisterAt !== null && Date.parse(state.lastRegisterAt) > Date.parse(started);
}

/** A forwarded heartbeat since the last restart started. */
export function heartbeatSinceRestart(state: WorkspaceState): boolean {
  const started = state.restart.lastStartedAt;
  const heartbeat = lastHeartbeatAt(state);
  return started !== null && heartbeat !== null && heartbeat > Date.parse(started);
}

/** A heartbeat and a register (the new runtime's) since the last restart started, both forwarded. */
export function hasFreshHeartbeat(state: WorkspaceState): boolean {
  return registeredSinceRestart(state) && heartbeatSinceRestart(state);
}

/**
 * The last sign of life the workflow itself knows, in ms of its clock: a register, a forwarded
 * heartbeat, or the status change (the lease is published from it; the ledger adds the heartbeats
 * it did not forward).
 */
export function lastSignOfLife(state: WorkspaceState): number {
  const register = state.lastRegisterAt === null ? 0 : Date.parse(state.lastRegisterAt);
  return Math.max(register, lastHeartbeatAt(state) ?? 0, Date.parse(state.statusSince));
}

interface Health {
  degradeReason: string | null;
  recovered: boolean;
}

/** What health is judged on: a heartbeat's error rate, runtime state and whether it manages its own status. */
export type HealthFacts = Pick<LastHeartbeat, 'errorRate' | 'runtimeState' | 'managesOwnStatus'>;

/**
 * Health from a heartbeat: wedged, or an error rate at or above the degrade threshold (unless the
 * runtime manages its own status), degrades; recovery needs the rate below the recover threshold.
 */
export function assessHealth(
  beat: HealthFacts,
  config: Pick<LifecycleConfig, 'degradeErrorRate' | 'recoverErrorRate'>,
): Health {
  if (beat.runtimeState === 'wedged') return { degradeReason: 'runtime reports wedged', recovered: false };
  if (!beat.managesOwnStatus && beat.errorRate >= config.degradeErrorRate) {
    return { degradeReason: `error rate ${beat.errorRate} ≥ ${config.degradeErrorRate}`, recovered: false };
  }
  const recovered = !beat.managesOwnStatus && beat.errorRate < config.recoverErrorRate && beat.runtimeState === '';
  return { degradeReason: null, recovered };
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
