/** What the state machine's unit tests share: a workspace, a clock, frozen inputs, one step. */
import { defaultLifecycleConfig as config } from '../../workflows/config.js';
import {
  initialState,
  transition,
  type Event,
  type InitialStatus,
  type LivenessContract,
  type WorkspaceState,
} from '../../workflows/state-machine.js';

export const ID = 'ws-1';
export const T0 = Date.parse('2026-01-01T00:00:00Z');
export const iso = (ms: number): string => new Date(ms).toISOString();

/** Deep-freezes so any mutation of the machine's input throws. */
export function frozen<T>(value: T): T {
  if (value && typeof value === 'object') {
    Object.values(value).forEach(frozen);
    Object.freeze(value);
  }
  return value;
}

/** A new workspace (frozen), as its workflow starts it. */
export function start(status: InitialStatus = 'provisioning'): WorkspaceState {
  return frozen(initialState(ID, status, T0));
}

/** The state one event leads to, with the default lifecycle config. */
export function apply(state: WorkspaceState, event: Event, at = T0 + 1_000): WorkspaceState {
  return transition(state, event, at, config).state;
}

/**
 * What the fleet liveness controller does once it finds the lease expired: a `leaseExpired` for
 * the contract the workspace last published.
 */
export function expireLease(state: WorkspaceState, at: number): WorkspaceState {
  const event: Event = {
    type: 'leaseExpired',
    version: state.livenessContract?.version ?? 0,
    silentForMs: config.livenessTtlMs,
  };
  return transition(state, event, at, config).state;
}

/** The contract an online workspace publishes under the default lifecycle config, with `overrides`. */
export function onlineContract(overrides: Partial<LivenessContract> = {}): LivenessContract {
  return {
    want: 'degrading',
    degradeErrorRate: config.degradeErrorRate,
    recoverErrorRate: config.recoverErrorRate,
    hasCard: true,
    leaseWatched: true,
    leaseTtlMs: config.livenessTtlMs,
    ...overrides,
  };
}
