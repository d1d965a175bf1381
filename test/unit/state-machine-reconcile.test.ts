/**
 * The state machine's reconcile rules (workflows/state-machine/reconcile.ts): one pass at a time
 * with one follow-up, its modes, what a finished pass changed.
 */
import { describe, expect, it } from 'vitest';
import { defaultLifecycleConfig as config } from '../../workflows/config.js';
import {
  nextDeadline,
  repairsToHold,
  transition,
  type Event,
  type ReconcileReport,
  type WorkspaceState,
} from '../../workflows/state-machine.js';
import { heartbeatPayload, registerPayload } from '../helpers/payloads.js';
import { apply, frozen, ID, iso, start, T0 } from '../helpers/state-machine.js';

describe('reconcile passes', () => {
  it('a completion with a queued follow-up starts exactly one more pass; a failure is recorded', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) });
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: 0.9 }) });
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID) });
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: 0.9 }) });
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID) });
    expect(state.reconcile).toMatchObject({ running: true, followUp: true });
    const done = transition(
      state,
      { type: 'reconcileFinished', outcome: 'failed', error: 'box unreachable' },
      T0 + 2,
      config,
    );
    expect(done.effects).toEqual([
      { type: 'startReconcile', trigger: 'follow-up of coalesced triggers', mode: 'verify' },
    ]);
    expect(done.state.reconcile).toMatchObject({
      running: true,
      followUp: false,
      lastOutcome: 'failed',
      lastError: 'box unreachable',
    });
    expect(done.state.counters.reconcilesFailed).toBe(1);
    const idle = transition(done.state, { type: 'reconcileFinished', outcome: 'succeeded' }, T0 + 3, config);
    expect(idle.effects).toEqual([]);
    expect(idle.state.reconcile).toMatchObject({ running: false, lastOutcome: 'succeeded', lastError: null });
  });

  it('a plugin no longer declared leaves the state', () => {
    const installed = (name: string) => ({
      name,
      status: 'installed' as const,
      via: 'delivered' as const,
      revision: 'r1',
    });
    const finish = (state: WorkspaceState, report: ReconcileReport): WorkspaceState => {
      const running = { ...state, reconcile: { ...state.reconcile, running: true } };
      return transition(running, { type: 'reconcileFinished', outcome: 'succeeded', report }, T0 + 1, config).state;
    };
    let state = finish(start(), {
      declared: 3,
      declaredNames: ['a', 'b', 'c'],
      outcomes: ['a', 'b', 'c'].map(installed),
    });
    expect(Object.keys(state.plugins)).toEqual(['a', 'b', 'c']);
    state = finish(state, { declared: 2, declaredNames: ['c', 'd'], outcomes: [installed('d')] });
    expect(Object.keys(state.plugins).sort()).toEqual(['c', 'd']);
    expect(state.pluginsDeclaredCount).toBe(2);
  });
});

describe('plugin lifecycle', () => {
  const step = (state: WorkspaceState, event: Event, at: number) => transition(state, event, at, config);
  const finish = (report: ReconcileReport) => ({ type: 'reconcileFinished', outcome: 'succeeded', report }) as const;
  /** Online, its first (verify) pass finished with one plugin installed. */
  const online = (): WorkspaceState => {
    const registered = step(start(), { type: 'register', payload: registerPayload(ID) }, T0).state;
    const report: ReconcileReport = {
      declared: 1,
      declaredNames: ['a'],
      outcomes: [{ name: 'a', status: 'installed', via: 'boot', revision: 'version:1' }],
    };
    return frozen(step(registered, finish(report), T0 + 1_000).state);
  };

  it('every register verifies the box, even one that finds the workspace online; the follow-up keeps the deepest mode', () => {
    // The same boot's register repeated within the settle window asks nothing more.
    const repeated = step(online(), { type: 'register', payload: registerPayload(ID) }, T0 + 2_000);
    expect(repeated.effects.filter((e) => e.type === 'startReconcile')).toEqual([]);
    const later = T0 + config.settleWindowMs;
    const again = step(online(), { type: 'register', payload: registerPayload(ID) }, later);
    expect(again.effects).toContainEqual({
      type: 'startReconcile',
      trigger: 'register (runtime booted)',
      mode: 'verify',
    });
    // While that pass runs: a refresh, then a plain declaration: one follow-up, in refresh mode.
    let state = step(
      again.state,
      { type: 'reconcileRequested', mode: 'refresh', requester: 'operator' },
      later + 100,
    ).state;
    state = step(state, { type: 'pluginsDeclared' }, later + 200).state;
    expect(state.reconcile).toMatchObject({ running: true, followUp: true, followUpMode: 'refresh' });
    const done = step(state, finish({ declared: 1, declaredNames: ['a'], outcomes: [] }), later + 1_000);
    expect(done.effects).toEqual([
      { type: 'startReconcile', trigger: 'follow-up of coalesced triggers', mode: 'refresh' },
    ]);
    expect(done.state.reconcile.followUpMode).toBe('diff');
  });

  it('removals and drift repairs: pending while the pass runs, one restart for the batch, counted after', () => {
    const running = step(online(), { type: 'pluginsDeclared' }, T0 + 2_000).state;
    const planned = step(
      running,
      { type: 'reconcilePlanned', plan: { deliveries: 0, removals: 2, repairs: 1, refreshes: 0 } },
      T0 + 2_100,
    ).state;
    expect(planned.pluginsPending).toBe(3);
    expect(planned.reconcile.plan).toEqual({ deliveries: 0, removals: 2, repairs: 1, refreshes: 0 });
    const done = step(
      planned,
      finish({
        declared: 1,
        declaredNames: ['a'],
        outcomes: [
          { name: 'old', status: 'removed' },
          { name: 'older', status: 'failed', error: 'box unreachable', delivered: true },
          { name: 'a', status: 'installed', via: 'delivered', revision: 'r2', change: 'repaired' },
        ],
      }),
      T0 + 3_000,
    );
    expect(done.effects.filter((e) => e.type === 'restartBox')).toEqual([
      {
        type: 'restartBox',
        restartId: 'restart-1',
        reason: 'reconcile delivered 2 and removed 1 plugin(s)',
        cause: 'reconcile',
      },
    ]);
    expect(done.state.pluginsPending).toBe(1); // the failed removal is still owed
    expect(done.state.plugins['a']).toMatchObject({ revision: 'r2', change: 'repaired' });
    // The failed removal shows until a pass removes it.
    expect(Object.keys(done.state.plugins).sort()).toEqual(['a', 'older']);
    expect(done.state.plugins['older']).toMatchObject({ status: 'failed', error: 'box unreachable' });
    expect(done.state.counters).toMatchObject({ pluginsRemoved: 1, driftRepairs: 1, pluginUpgrades: 0 });
    expect(done.state.reconcile).toMatchObject({
      plan: null,
      lastChanges: { delivered: 0, removed: 1, repaired: 1, upgraded: 0 },
    });
  });

  it('the resync is a durable deadline while the runtime is up, counted from the last verify; 0 switches it off', () => {
    const state = online();
    const due = T0 + config.resyncPeriodMs; // the register's verify pass was asked at T0
    const beating = step(state, { type: 'heartbeat', payload: heartbeatPayload(ID) }, due - 1_000).state;
    expect(nextDeadline(beating, config)).toBe(due);
    const fired = step(beating, { type: 'deadline' }, due);
    expect(fired.effects).toContainEqual({ type: 'startReconcile', trigger: 'periodic resync', mode: 'verify' });
    expect(nextDeadline(fired.state, config)).toBe(due + config.resyncPeriodMs);
    expect(fired.state.reconcile.lastVerifyAt).toBe(iso(due));

    // Without a resync a healthy workspace has no timer at all: silence is the fleet controller's.
    expect(nextDeadline(beating, { ...config, resyncPeriodMs: 0 })).toBeNull();
    // Not while the runtime is down: its register will verify.
    expect(nextDeadline({ ...beating, status: 'offline', statusSince: iso(due) }, config)).toBeNull();
  });

  it('a repaired plugin is held (not delivered again) only by the first pass after the restart its repair asked', () => {
    const running = step(online(), { type: 'pluginsDeclared' }, T0 + 2_000).state;
    const repaired = step(
      running,
      finish({
        declared: 1,
        declaredNames: ['a'],
        outcomes: [{ name: 'a', status: 'installed', via: 'delivered', revision: 'r2', change: 'repaired' }],
      }),
      T0 + 3_000,
    ).state;
    expect(repaired.restart.inFlight).toBe(true);
    const back = step(repaired, { type: 'restartFinished', outcome: 'succeeded' }, T0 + 4_000).state;
    const first = step(back, { type: 'register', payload: registerPayload(ID) }, T0 + 5_000);
    expect(first.effects).toContainEqual(expect.objectContaining({ type: 'startReconcile', holdRepairs: ['a'] }));
    const clean = step(first.state, finish({ declared: 1, declaredNames: ['a'], outcomes: [] }), T0 + 6_000).state;
    expect(repairsToHold(clean)).toEqual([]);
    const later = step(clean, { type: 'reconcileRequested', mode: 'verify', requester: 'operator' }, T0 + 60_000);
    const started = later.effects.find((e) => e.type === 'startReconcile');
    expect(started).toBeDefined();
    expect(started).not.toHaveProperty('holdRepairs');
  });
});
