/**
 * The working copy one transition changes: the next state, the effects it asks for, and the
 * status changes it made. The input state is never mutated.
 */
import type { LifecycleConfig } from '../config.js';
import {
  MAX_RECENT,
  type CommandAnswer,
  type Effect,
  type SignalName,
  type Status,
  type StatusChange,
  type WorkspaceState,
} from './types.js';

export class Draft {
  readonly state: WorkspaceState;
  readonly effects: Effect[] = [];
  /** Each move into online this step made, in order: each asks for a reconcile (transition). */
  readonly cameOnline: { from: Status; cause: string }[] = [];
  /** Every status change this step made, in order: the projection write reports them all. */
  readonly moves: StatusChange[] = [];
  /**
   * Publish the liveness contract even if unchanged: the lease must be written again
   * (onLeaseExpired), or a heartbeat wanted while a restart drains must be followed by the next.
   */
  republish = false;
  /** What an operator command did (the Update's answer). */
  answer: CommandAnswer | undefined;

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

  /** An operator holds the workspace: nothing automatic restarts or delivers. */
  get cordoned(): boolean {
    return this.state.cordon !== null;
  }

  /** Changes status, recording the change and its cause. */
  moveTo(to: Status, cause: string): void {
    const from = this.state.status;
    if (from === to) return;
    this.state.status = to;
    this.state.statusSince = this.at;
    this.state.counters.transitions++;
    const change = { from, to, cause, at: this.at };
    this.moves.push(change);
    this.state.recentTransitions = [change, ...this.state.recentTransitions].slice(0, MAX_RECENT);
    if (to === 'online') this.cameOnline.push({ from, cause });
  }

  reject(signal: SignalName | 'restart', reason: string): void {
    this.state.counters.rejected++;
    this.state.recentRejections = [{ signal, reason, at: this.at }, ...this.state.recentRejections].slice(
      0,
      MAX_RECENT,
    );
  }
}

export const started = (detail: string): CommandAnswer => ({ outcome: 'started', detail });
export const merged = (detail: string): CommandAnswer => ({ outcome: 'merged', detail });
export const refused = (detail: string): CommandAnswer => ({ outcome: 'refused', detail });

export function iso(ms: number): string {
  return new Date(ms).toISOString();
}

export function seconds(ms: number): string {
  return `${ms / 1000}s`;
}
