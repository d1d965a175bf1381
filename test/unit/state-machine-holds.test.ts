/**
 * What holds a restart (workflows/state-machine/restart.ts, cordon.ts): crash-loop backoff, the
 * drain of a restart that only loads plugins, an operator's cordon; and what operator commands
 * answer.
 */
import { describe, expect, it } from 'vitest';
import { defaultLifecycleConfig as config } from '../../workflows/config.js';
import {
  crashBackoffDelayMs,
  nextDeadline,
  transition,
  type Event,
  type ReconcileReport,
  type WorkspaceState,
} from '../../workflows/state-machine.js';
import { heartbeatPayload, registerPayload } from '../helpers/payloads.js';
import { apply, frozen, ID, iso, start, T0 } from '../helpers/state-machine.js';

const dead: Event = { type: 'deadDeclared', reason: 'not running', requester: 'dispatch' };
const restartDone: Event = { type: 'restartFinished', outcome: 'succeeded' };
const restartBoxes = (effects: { type: string }[]): number => effects.filter((e) => e.type === 'restartBox').length;

/** Online, with the register's reconcile pass finished (nothing delivered). */
function online(at = T0): WorkspaceState {
  const state = apply(start(), { type: 'register', payload: registerPayload(ID) }, at);
  return frozen(apply(state, { type: 'reconcileFinished', outcome: 'succeeded' }, at + 1));
}

const delivered: ReconcileReport = {
  declared: 1,
  declaredNames: ['a'],
  outcomes: [{ name: 'a', status: 'installed', via: 'delivered', revision: 'r1' }],
};

describe('crash-loop backoff', () => {
  it('waits 10 s doubling to 5 min from the second crash in a row', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 20].map((n) => crashBackoffDelayMs(n, config) / 1000)).toEqual([
      0, 10, 20, 40, 80, 160, 300, 300, 300,
    ]);
  });

  it('a runtime that dies soon after each restart is restarted at once twice, then after a growing wait on a durable deadline', () => {
    let state = online();
    let now = T0 + 60 * 60_000;
    // A death after a long run is no crash: restarted at once.
    let step = transition(state, dead, now, config);
    expect(restartBoxes(step.effects)).toBe(1);
    expect(step.state.restart).toMatchObject({ crashes: 0, crashLooping: false });
    state = apply(step.state, restartDone, now + 1_000);
    // Dies 5 s after: the first crash, still restarted at once.
    now += 5_000;
    step = transition(state, dead, now, config);
    expect(restartBoxes(step.effects)).toBe(1);
    expect(step.state.restart).toMatchObject({ crashes: 1, crashLooping: false, nextAttemptAt: null });
    state = apply(step.state, restartDone, now + 1_000);
    // The second crash: crash-looping, the restart held 10 s.
    now += 5_000;
    step = transition(state, dead, now, config);
    expect(restartBoxes(step.effects)).toBe(0);
    expect(step.effects).toContainEqual(expect.objectContaining({ type: 'revokeTokens' }));
    expect(step.state.restart).toMatchObject({
      crashes: 2,
      crashLooping: true,
      nextAttemptAt: iso(now + 10_000),
      held: { cause: 'dead', reason: 'dead: not running', since: iso(now) },
      inFlight: false,
    });
    expect(nextDeadline(step.state, config)).toBe(now + 10_000);
    // Dead detection and the watchdog keep asking meanwhile: merged, no second crash counted.
    state = apply(step.state, dead, now + 5_000);
    expect(state.restart.crashes).toBe(2);
    expect(restartBoxes(transition(state, { type: 'deadline' }, now + 9_999, config).effects)).toBe(0);
    step = transition(state, { type: 'deadline' }, now + 10_000, config);
    expect(restartBoxes(step.effects)).toBe(1);
    expect(step.state.restart).toMatchObject({ held: null, nextAttemptAt: null, crashLooping: true, count: 3 });
    state = apply(step.state, restartDone, now + 11_000);
    // The third crash waits 20 s.
    now += 20_000;
    step = transition(state, dead, now, config);
    expect(step.state.restart).toMatchObject({ crashes: 3, nextAttemptAt: iso(now + 20_000) });
    // An operator's restart is not delayed: it starts now and answers the held one.
    const forced = transition(
      step.state,
      { type: 'restartRequested', reason: 'try now', requester: 'operator' },
      now + 1,
      config,
    );
    expect(restartBoxes(forced.effects)).toBe(1);
    expect(forced.answer).toEqual({ outcome: 'started', detail: 'restart 4' });
    expect(forced.state.restart).toMatchObject({ held: null, nextAttemptAt: null, crashLooping: true });
  });

  it('a healthy stretch online resets the count', () => {
    let state = online();
    let now = T0 + 60 * 60_000;
    for (let i = 0; i < 3; i++) {
      state = apply(state, dead, now);
      state = apply(state, restartDone, now + 1_000);
      now += 5_000;
    }
    expect(state.restart).toMatchObject({ crashes: 2, crashLooping: true });
    // The runtime comes back and stays online.
    state = apply(state, restartDone, now);
    state = apply(state, { type: 'register', payload: registerPayload(ID) }, now);
    state = apply(state, { type: 'reconcileFinished', outcome: 'succeeded' }, now + 1);
    expect(state.status).toBe('online');
    // The settle window's end passes first (the want changes), then the stretch resets the count.
    state = apply(state, { type: 'deadline' }, now + config.settleWindowMs);
    expect(state.restart.crashLooping).toBe(true);
    expect(nextDeadline(state, config)).toBe(now + config.healthyStretchMs);
    const reset = transition(state, { type: 'deadline' }, now + config.healthyStretchMs, config);
    expect(reset.state.restart).toMatchObject({ crashes: 0, crashLooping: false, nextAttemptAt: null });
    // A death now is no crash again.
    const later = transition(reset.state, dead, now + config.healthyStretchMs + 1_000, config);
    expect(restartBoxes(later.effects)).toBe(1);
  });

  it('a held restart for a death is moot once a fresh runtime registers', () => {
    let state = online();
    let now = T0 + 60 * 60_000;
    for (let i = 0; i < 3; i++) {
      state = apply(state, restartDone, now - 1);
      state = apply(state, dead, now);
      now += 5_000;
    }
    expect(state.restart.held).not.toBeNull();
    state = apply(state, { type: 'register', payload: registerPayload(ID) }, now);
    expect(state.restart).toMatchObject({ held: null, nextAttemptAt: null });
    expect(state.status).toBe('online');
  });
});

describe('restarts wait for work', () => {
  /** Online, its runtime busy, and a pass that delivered a plugin: the restart that loads it. */
  function deliveredWhileBusy(): { state: WorkspaceState; effects: { type: string }[] } {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID, { active_tasks: 2 }) }, T0 + 1_000);
    expect(state.lastHeartbeat?.activeTasks).toBe(2);
    return transition(
      state,
      { type: 'reconcileFinished', outcome: 'succeeded', report: delivered },
      T0 + 2_000,
      config,
    );
  }

  it('a restart that only loads plugins waits while the last heartbeat reports active tasks, and wants the next heartbeat', () => {
    const { state, effects } = deliveredWhileBusy();
    expect(restartBoxes(effects)).toBe(0);
    expect(state.status).toBe('online');
    expect(state.restart.held).toMatchObject({ cause: 'reconcile', since: iso(T0 + 2_000) });
    expect(state.livenessContract?.want).toBe('any');
    expect(nextDeadline(state, config)).toBe(T0 + 2_000 + config.drainTimeoutMs);
    // Still busy: the heartbeat is recorded and the next one wanted again, under a new contract version.
    const busy = transition(
      state,
      { type: 'heartbeat', payload: heartbeatPayload(ID, { active_tasks: 1 }) },
      T0 + 30_000,
      config,
    );
    expect(restartBoxes(busy.effects)).toBe(0);
    const write = busy.effects.find((e) => e.type === 'writeProjection');
    expect(write).toMatchObject({ contract: { want: 'any' } });
    expect(busy.state.livenessContract?.version).toBeGreaterThan(state.livenessContract?.version ?? Infinity);
    // Drained: the restart goes at once.
    const idle = transition(
      busy.state,
      { type: 'heartbeat', payload: heartbeatPayload(ID, { active_tasks: 0 }) },
      T0 + 60_000,
      config,
    );
    expect(idle.effects).toContainEqual(expect.objectContaining({ type: 'restartBox', cause: 'reconcile' }));
    expect(idle.state.restart.held).toBeNull();
  });

  it("the ledger's active tasks, read as the pass reports, decide: busy holds the restart, idle lets it go", () => {
    // The runtime's heartbeats stayed in the ledger: the workflow's last one says idle.
    const online = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    const busy = transition(
      online,
      { type: 'reconcileFinished', outcome: 'succeeded', report: { ...delivered, activeTasks: 3 } },
      T0 + 2_000,
      config,
    );
    expect(restartBoxes(busy.effects)).toBe(0);
    expect(busy.state).toMatchObject({ activeTasks: 3, restart: { held: { cause: 'reconcile' } } });
    expect(busy.state.livenessContract?.want).toBe('any');
    // A heartbeat the workflow holds says busy; the ledger's later one says idle: the ledger's counts.
    const stale = apply(online, { type: 'heartbeat', payload: heartbeatPayload(ID, { active_tasks: 2 }) }, T0 + 1_000);
    const idle = transition(
      stale,
      { type: 'reconcileFinished', outcome: 'succeeded', report: { ...delivered, activeTasks: 0 } },
      T0 + 2_000,
      config,
    );
    expect(idle.effects).toContainEqual(expect.objectContaining({ type: 'restartBox', cause: 'reconcile' }));
  });

  it('the drain deadline lets it go even if the runtime stays busy', () => {
    const { state } = deliveredWhileBusy();
    const deadline = T0 + 2_000 + config.drainTimeoutMs;
    expect(restartBoxes(transition(state, { type: 'deadline' }, deadline - 1, config).effects)).toBe(0);
    const step = transition(state, { type: 'deadline' }, deadline, config);
    expect(step.effects).toContainEqual(expect.objectContaining({ type: 'restartBox', cause: 'reconcile' }));
  });

  it('a dead verdict or an operator restart does not wait, and answers the held restart too', () => {
    const { state } = deliveredWhileBusy();
    for (const event of [dead, { type: 'restartRequested', reason: 'ops', requester: 'operator' } as Event]) {
      const step = transition(state, event, T0 + 3_000, config);
      expect(restartBoxes(step.effects)).toBe(1);
      expect(step.state.restart.held).toBeNull();
    }
  });
});

describe('cordon', () => {
  it('holds automatic restarts and deliveries, still shows verdicts, and runs what was held once on uncordon', () => {
    let step = transition(online(), { type: 'cordon', reason: 'incident 42', requester: 'alice' }, T0 + 10, config);
    expect(step.answer).toEqual({
      outcome: 'started',
      detail: 'cordoned: automatic restarts and plugin deliveries are held until uncordon',
    });
    expect(step.state.cordon).toEqual({ since: iso(T0 + 10), reason: 'incident 42', requester: 'alice' });
    // The projection carries it to the fleet's gauge.
    expect(step.effects).toContainEqual(
      expect.objectContaining({ type: 'writeProjection', holds: { cordoned: true, crashLooping: false } }),
    );
    const again = transition(step.state, { type: 'cordon', reason: 'x', requester: 'bob' }, T0 + 11, config);
    expect(again.answer).toEqual({ outcome: 'merged', detail: `already cordoned by alice since ${iso(T0 + 10)}` });

    // Plugins declared: held, no pass.
    step = transition(step.state, { type: 'pluginsDeclared' }, T0 + 20, config);
    expect(step.effects.filter((e) => e.type === 'startReconcile')).toEqual([]);
    expect(step.state.reconcile.heldMode).toBe('diff');
    // The box dies: verdict and declaration shown, tokens revoked, no restart.
    let state = apply(step.state, { type: 'verdict', verdict: 'dead', detail: 'not running', requester: 'd' }, T0 + 30);
    step = transition(state, dead, T0 + 30, config);
    expect(step.state).toMatchObject({ status: 'offline', deadDetection: { deadDeclarations: 1 } });
    expect(step.state.deadDetection.lastVerdict).toMatchObject({ verdict: 'dead' });
    expect(restartBoxes(step.effects)).toBe(0);
    expect(step.state.restart.held).toMatchObject({ cause: 'dead' });
    expect(nextDeadline(step.state, config)).toBeNull();
    // Silence past the TTL does not ask again: the held restart answers it.
    expect(step.state.livenessContract?.leaseWatched).toBe(false);
    state = step.state;

    // Uncordon: the restart runs once; the pass is owed by the way back online.
    step = transition(state, { type: 'uncordon', requester: 'alice' }, T0 + 40, config);
    expect(step.answer).toEqual({ outcome: 'started', detail: 'uncordoned; released: restart (dead: not running)' });
    expect(step.effects.filter((e) => e.type === 'restartBox')).toEqual([
      { type: 'restartBox', restartId: 'restart-1', reason: 'dead: not running', cause: 'dead' },
    ]);
    expect(step.state).toMatchObject({ cordon: null, status: 'provisioning', restart: { held: null } });
    const twice = transition(step.state, { type: 'uncordon', requester: 'alice' }, T0 + 41, config);
    expect(twice.answer).toEqual({ outcome: 'merged', detail: 'not cordoned' });
    expect(twice.effects).toEqual([]);
  });

  it('uncordon during a crash-loop backoff: the restart still waits for its next attempt', () => {
    let state = online();
    let now = T0 + 60 * 60_000;
    for (let i = 0; i < 2; i++) {
      state = apply(state, dead, now);
      state = apply(state, restartDone, now + 1_000);
      now += 5_000;
    }
    state = apply(state, { type: 'cordon', reason: 'r', requester: 'o' }, now);
    state = apply(state, dead, now + 1);
    expect(state.restart).toMatchObject({ crashLooping: true, nextAttemptAt: iso(now + 1 + 10_000) });
    const step = transition(state, { type: 'uncordon', requester: 'o' }, now + 2, config);
    expect(step.answer?.detail).toBe(
      'uncordoned; released: restart (dead: not running), still held by crash-loop backoff',
    );
    expect(restartBoxes(step.effects)).toBe(0);
    expect(nextDeadline(step.state, config)).toBe(now + 1 + 10_000);
    expect(restartBoxes(transition(step.state, { type: 'deadline' }, now + 1 + 10_000, config).effects)).toBe(1);
  });

  it('a pass held while cordoned runs once on uncordon, in the deepest mode asked', () => {
    let state = apply(online(), { type: 'cordon', reason: 'r', requester: 'o' }, T0 + 10);
    state = apply(state, { type: 'pluginsDeclared' }, T0 + 20);
    state = apply(state, { type: 'deadline' }, T0 + config.resyncPeriodMs);
    expect(state.reconcile.heldMode).toBe('verify');
    const step = transition(state, { type: 'uncordon', requester: 'o' }, T0 + config.resyncPeriodMs + 1, config);
    expect(step.effects.filter((e) => e.type === 'startReconcile')).toEqual([
      { type: 'startReconcile', trigger: 'held while cordoned', mode: 'verify' },
    ]);
    expect(step.answer?.detail).toBe('uncordoned; released: a verify reconcile pass');
  });

  it("an operator's restart and reconcile still run while cordoned; a delivery's restart waits", () => {
    const cordoned = apply(online(), { type: 'cordon', reason: 'r', requester: 'o' }, T0 + 10);
    const restart = transition(
      cordoned,
      { type: 'restartRequested', reason: 'ops', requester: 'operator' },
      T0 + 20,
      config,
    );
    expect(restartBoxes(restart.effects)).toBe(1);
    const reconcile = transition(
      cordoned,
      { type: 'reconcileRequested', mode: 'refresh', requester: 'operator' },
      T0 + 20,
      config,
    );
    expect(reconcile.answer).toEqual({ outcome: 'started', detail: 'a refresh pass' });
    const finished = transition(
      reconcile.state,
      { type: 'reconcileFinished', outcome: 'succeeded', report: delivered },
      T0 + 30,
      config,
    );
    expect(restartBoxes(finished.effects)).toBe(0);
    expect(finished.state.restart.held).toMatchObject({ cause: 'reconcile' });
  });

  it("an operator's reconcile that follows the running pass still runs while cordoned; an automatic one is held", () => {
    const running = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    const cordoned = apply(running, { type: 'cordon', reason: 'r', requester: 'o' }, T0 + 10);
    const asked = transition(
      cordoned,
      { type: 'reconcileRequested', mode: 'verify', requester: 'operator' },
      T0 + 20,
      config,
    );
    expect(asked.answer).toEqual({ outcome: 'merged', detail: 'into the pass running: one more pass follows it' });
    const finished = transition(asked.state, { type: 'reconcileFinished', outcome: 'succeeded' }, T0 + 30, config);
    expect(finished.effects).toContainEqual({
      type: 'startReconcile',
      trigger: 'follow-up of coalesced triggers',
      mode: 'verify',
    });
    const automatic = apply(cordoned, { type: 'pluginsDeclared' }, T0 + 20);
    const done = transition(automatic, { type: 'reconcileFinished', outcome: 'succeeded' }, T0 + 30, config);
    expect(done.effects.filter((e) => e.type === 'startReconcile')).toEqual([]);
    expect(done.state.reconcile.heldMode).toBe('diff');
  });
});

describe('operator command answers', () => {
  it('restart: started, merged into the one in flight, refused when removed or external', () => {
    const first = transition(online(), { type: 'restartRequested', reason: 'a', requester: 'o' }, T0 + 10, config);
    expect(first.answer).toEqual({ outcome: 'started', detail: 'restart 1' });
    const second = transition(first.state, { type: 'restartRequested', reason: 'b', requester: 'o' }, T0 + 20, config);
    expect(second.answer).toEqual({
      outcome: 'merged',
      detail: 'into restart 1 in flight: one more restart follows it',
    });
    const removed = apply(online(), { type: 'deprovision' }, T0 + 10);
    for (const event of [
      { type: 'restartRequested', reason: 'a', requester: 'o' },
      { type: 'reconcileRequested', mode: 'verify', requester: 'o' },
      { type: 'cordon', reason: 'a', requester: 'o' },
      { type: 'uncordon', requester: 'o' },
    ] satisfies Event[])
      expect(transition(removed, event, T0 + 20, config).answer).toEqual({
        outcome: 'refused',
        detail: 'the workspace is removed',
      });
    const external = apply(start('awaiting_agent'), { type: 'register', payload: registerPayload(ID) }, T0);
    expect(
      transition(external, { type: 'restartRequested', reason: 'a', requester: 'o' }, T0 + 1, config).answer,
    ).toEqual({ outcome: 'refused', detail: 'the runtime is external: restart it where it runs' });
    expect(transition(external, { type: 'cordon', reason: 'a', requester: 'o' }, T0 + 1, config).answer?.outcome).toBe(
      'refused',
    );
  });

  it('reconcile: started, or merged into the pass running', () => {
    const running = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    expect(
      transition(running, { type: 'reconcileRequested', mode: 'verify', requester: 'o' }, T0 + 1, config).answer,
    ).toEqual({ outcome: 'merged', detail: 'into the pass running: one more pass follows it' });
    expect(
      transition(online(), { type: 'reconcileRequested', mode: 'verify', requester: 'o' }, T0 + 10, config).answer,
    ).toEqual({ outcome: 'started', detail: 'a verify pass' });
    // Events that are not commands answer nothing.
    expect(transition(online(), dead, T0 + 10, config).answer).toBeUndefined();
  });
});
