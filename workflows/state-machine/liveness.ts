/**
 * Liveness: what the runtime's calls say. A register or any heartbeat brings the workspace
 * online (a heartbeat while a restart is in flight may be the old runtime's and proves nothing);
 * heartbeats degrade and recover it by their health; silence past the liveness TTL takes it
 * offline, provisioning past its timeout fails it. The heartbeat ledger's last-seen time counts
 * for liveness like a forwarded heartbeat.
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
import { iso, seconds, type Draft } from './draft.js';
import { requestReconcile } from './reconcile.js';
import { requestRestart } from './restart.js';
import type { AgentCardSummary, LastHeartbeat, WorkspaceState } from './types.js';

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
export function onHeartbeat(draft: Draft, payload: unknown, config: LifecycleConfig, beats = 1): void {
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
export function onHeartbeatsSeen(draft: Draft, lastSeenAt: string | null): void {
  if (lastSeenAt === null || Number.isNaN(Date.parse(lastSeenAt))) return;
  const known = lastHeartbeatAt(draft.state);
  if (known !== null && Date.parse(lastSeenAt) <= known) return;
  // Never past the workflow's own clock: a ledger clock running ahead would stretch liveness.
  draft.state.heartbeatSeenAt = iso(Math.min(Date.parse(lastSeenAt), draft.now));
}

/**
 * A deadline fired: the current status's own deadline, if it passed. Provisioning too long
 * fails; a live workspace silent for the liveness TTL goes offline and is evaluated (an external
 * one awaits its agent); offline and silent a TTL more, its box is restarted.
 */
export function onStatusDeadline(draft: Draft): void {
  const state = draft.state;
  const config = draft.config;
  const deadline = statusDeadline(state, config);
  if (deadline === null || draft.now < deadline) return;
  if (state.status === 'provisioning') {
    draft.moveTo('failed', `still provisioning after ${seconds(config.provisioningTimeoutMs)}`);
  } else if (state.status === 'offline') {
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

/** The deadline of the current status: provisioning timeout, liveness TTL, or offline too long. */
export function statusDeadline(state: WorkspaceState, config: LifecycleConfig): number | null {
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

/** Whether the liveness TTL has passed for a live workspace, by what the state knows so far. */
export function livenessExpired(state: WorkspaceState, now: number, config: LifecycleConfig): boolean {
  return (state.status === 'online' || state.status === 'degraded') && now >= lastSeen(state) + config.livenessTtlMs;
}

/** The latest heartbeat time known (forwarded, or in the ledger), in ms; null before any. */
export function lastHeartbeatAt(state: WorkspaceState): number | null {
  const times = [state.lastHeartbeat?.at, state.heartbeatSeenAt].flatMap((at) =>
    typeof at === 'string' ? [Date.parse(at)] : [],
  );
  return times.length === 0 ? null : Math.max(...times);
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

function lastSeen(state: WorkspaceState): number {
  const register = state.lastRegisterAt === null ? 0 : Date.parse(state.lastRegisterAt);
  const heartbeat = lastHeartbeatAt(state) ?? 0;
  return Math.max(register, heartbeat, Date.parse(state.statusSince));
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
