/**
 * The workspace state machine: a pure, deterministic function (state, event, now) → (state, effects).
 *
 * Every status transition of a workspace happens in it and nowhere else. When a transition can
 * happen in several places, a trigger wired to one of them is missed by the others (a runtime
 * that only heartbeats never got its plugins). Here the reconcile request belongs to the
 * transition into online itself, whichever event caused it: `transition` below asks for it once
 * per move into online, after the event's own rule.
 *
 * The rules, by concern (workflows/state-machine/):
 * - types.ts: the state, events and effects;
 * - liveness.ts: register, heartbeats, health, the liveness contract, lease expiry and the
 *   provisioning timeout;
 * - reconcile.ts: when a plugin reconcile pass runs, and what a finished one changed;
 * - restart.ts: restarts, their retries, what holds them (crash-loop backoff, drain), strikes
 *   while settling and the dead declaration;
 * - cordon.ts: an operator's hold on a workspace.
 *
 * No I/O, no clocks, no randomness: `now` is passed in (the workflow's deterministic time).
 */
import type { LifecycleConfig } from './config.js';
import { onCordon, onUncordon } from './state-machine/cordon.js';
import { Draft } from './state-machine/draft.js';
import {
  lastSignOfLife,
  livenessContract,
  onHeartbeat,
  onLeaseExpired,
  onRegister,
  onStatusDeadline,
  sameContract,
  statusDeadline,
  wantDeadline,
} from './state-machine/liveness.js';
import {
  onPluginsDeclared,
  onReconcileFinished,
  onReconcilePlanned,
  onReconcileRequested,
  requestReconcile,
  resyncDeadline,
  resyncIfDue,
} from './state-machine/reconcile.js';
import {
  crashResetDeadline,
  declareDead,
  heldRestartDeadline,
  isDraining,
  onProbed,
  onRestartFinished,
  onStrike,
  onVerdict,
  releaseHeldRestart,
  requestRestart,
  resetCrashesIfDue,
  restartRetryDeadline,
  retryRestartIfDue,
} from './state-machine/restart.js';
import type { Event, Transition, WorkspaceState } from './state-machine/types.js';

export * from './state-machine/types.js';
export {
  assessHealth,
  hasFreshHeartbeat,
  hasRecentHeartbeat,
  heartbeatFacts,
  heartbeatSinceRestart,
  heartbeatWanted,
  lastHeartbeatAt,
  lastSignOfLife,
  leaseDeadline,
  livenessContract,
  registeredSinceRestart,
  type ContractRow,
  type HeartbeatFacts,
} from './state-machine/liveness.js';
export { repairsToHold, restartNeeded } from './state-machine/reconcile.js';
export {
  crashBackoffDelayMs,
  holdOf,
  isDraining,
  isSettling,
  restartRetryDelayMs,
  settleDeadline,
  strikeDeclaresDead,
} from './state-machine/restart.js';

/** The key of the restart in progress, as the ledger records it: unique across the workspace's lineages. */
export function restartKey(state: WorkspaceState): string {
  return `${state.versionBase}-${state.restart.count}`;
}

export function transition(state: WorkspaceState, event: Event, now: number, config: LifecycleConfig): Transition {
  const draft = new Draft(state, now, config);
  applyEvent(draft, event);
  // Whatever the event, a held restart whose hold ended starts now (uncordon, a heartbeat with no
  // active task, a deadline).
  releaseHeldRestart(draft);
  // A heartbeat wanted while a restart drains: the next one is wanted too (a new contract version).
  if (event.type === 'heartbeat' && isDraining(draft.state, now, config)) draft.republish = true;
  // Going online requests a reconcile: the runtime is (back) up, whichever event says so (a
  // register, a heartbeat, a recovery), so its plugins are converged and the tracked ones
  // verified on its box. Once per move into online; a pass already running owes one follow-up.
  for (const { from, cause } of draft.cameOnline) requestReconcile(draft, `${from}→online (${cause})`, 'verify');
  projectChanges(draft, state);
  return { state: draft.state, effects: draft.effects, ...(draft.answer ? { answer: draft.answer } : {}) };
}

/** The event's own rule; an operator command records its answer. */
function applyEvent(draft: Draft, event: Event): void {
  const { config } = draft;
  switch (event.type) {
    case 'register':
      return onRegister(draft, event.payload);
    case 'heartbeat':
      return onHeartbeat(draft, event.payload, config);
    case 'leaseExpired':
      return onLeaseExpired(draft, event.version);
    case 'deadline':
      // In this order: a due restart retry changes the status whose own deadline is read last.
      retryRestartIfDue(draft);
      resetCrashesIfDue(draft);
      resyncIfDue(draft);
      return onStatusDeadline(draft);
    case 'reconcileFinished':
      return onReconcileFinished(draft, event.outcome, event.error, event.report);
    case 'restartFinished':
      return onRestartFinished(draft, event.outcome, event.error);
    case 'restartRequested':
      draft.answer = requestRestart(draft, event.reason, event.requester, 'requested');
      return;
    case 'cordon':
      draft.answer = onCordon(draft, event.reason, event.requester);
      return;
    case 'uncordon':
      draft.answer = onUncordon(draft);
      return;
    case 'pluginsDeclared':
      return onPluginsDeclared(draft);
    case 'reconcileRequested':
      draft.answer = onReconcileRequested(draft, event.mode, event.requester);
      return;
    case 'reconcilePlanned':
      return onReconcilePlanned(draft, event.plan);
    case 'probed':
      return onProbed(draft, event.result);
    case 'strike':
      return onStrike(draft, event.requester, config);
    case 'deadDeclared':
      return declareDead(draft, event.reason, event.requester);
    case 'verdict':
      return onVerdict(draft, event);
    case 'deprovision':
      // Terminal: the box is retired, and nothing resurrects the workspace.
      if (draft.state.status === 'removed') return;
      draft.moveTo('removed', 'deprovision');
      draft.effects.push({ type: 'retire' });
      return;
  }
}

/**
 * Status, URL, delivery mode, holds or liveness contract changed, a register renewed the lease, or the
 * lease must be written again: the SQL projection and the ledger's contract get the final values
 * of the step, in one write, with the status changes the step made (a step can make two: dead,
 * then provisioning for the restart).
 */
function projectChanges(draft: Draft, previous: WorkspaceState): void {
  const next = draft.state;
  const contract = livenessContract(next, draft.now, draft.config);
  const published = next.livenessContract;
  const changed =
    next.status !== previous.status ||
    next.url !== previous.url ||
    next.deliveryMode !== previous.deliveryMode ||
    next.lastRegisterAt !== previous.lastRegisterAt ||
    (next.cordon === null) !== (previous.cordon === null) ||
    next.restart.crashLooping !== previous.restart.crashLooping ||
    published === null ||
    !sameContract(published, contract) ||
    draft.republish;
  if (!changed) return;
  next.counters.projectionWrites++;
  // Both counts only grow, so the sum grows with every write; the base orders lineages.
  const version = next.versionBase + next.counters.transitions + next.counters.projectionWrites;
  next.livenessContract = { ...contract, version };
  const { lastStartedAt } = next.restart;
  draft.effects.push({
    type: 'writeProjection',
    status: next.status,
    url: next.url,
    statusSince: next.statusSince,
    version,
    deliveryMode: next.deliveryMode,
    transitions: draft.moves,
    contract,
    leaseAgeMs: Math.max(0, draft.now - lastSignOfLife(next)),
    restart:
      lastStartedAt === null
        ? null
        : { key: restartKey(next), ageMs: Math.max(0, draft.now - Date.parse(lastStartedAt)) },
    holds: { cordoned: next.cordon !== null, crashLooping: next.restart.crashLooping },
  });
}

/** The earliest moment a durable timer must wake the workflow, or null when no deadline applies. */
export function nextDeadline(state: WorkspaceState, config: LifecycleConfig): number | null {
  const deadlines = [
    statusDeadline(state, config),
    wantDeadline(state, config),
    restartRetryDeadline(state),
    heldRestartDeadline(state, config),
    crashResetDeadline(state, config),
    resyncDeadline(state, config),
  ].filter((deadline) => deadline !== null);
  return deadlines.length === 0 ? null : Math.min(...deadlines);
}
