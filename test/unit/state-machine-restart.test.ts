/**
 * The state machine's restart rules (workflows/state-machine/restart.ts): restarts, their
 * retries, strikes while settling and the dead declaration.
 */
import { describe, expect, it } from 'vitest';
import { defaultLifecycleConfig as config } from '../../workflows/config.js';
import {
  hasFreshHeartbeat,
  hasRecentHeartbeat,
  isSettling,
  nextDeadline,
  transition,
} from '../../workflows/state-machine.js';
import { heartbeatPayload, registerPayload } from '../helpers/payloads.js';
import { apply, ID, iso, start, T0 } from '../helpers/state-machine.js';

describe('restarts and dead detection', () => {
  it('a failed restart is not asked again once the new runtime registered (unless it was to load plugins)', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    state = apply(state, { type: 'restartRequested', reason: 'ops', requester: 'operator' }, T0 + 1_000);
    state = apply(state, { type: 'restartFinished', outcome: 'failed', error: 'box unreachable' }, T0 + 2_000);
    expect(state.restart.retryAt).not.toBeNull();
    state = apply(state, { type: 'register', payload: registerPayload(ID) }, T0 + 3_000);
    expect(state.restart).toMatchObject({ retryAt: null, failures: 0 });
    // No retry deadline left: the next is the settle window's end, where the want changes.
    expect(nextDeadline(state, config)).toBe(T0 + 1_000 + config.settleWindowMs);
  });

  it('a failed restart is retried with backoff on a durable deadline, shown in the state', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    state = apply(state, { type: 'restartRequested', reason: 'ops', requester: 'operator' }, T0 + 1_000);
    state = apply(state, { type: 'restartFinished', outcome: 'failed', error: 'box unreachable' }, T0 + 2_000);
    expect(state.restart).toMatchObject({ inFlight: false, failures: 1, retryAt: iso(T0 + 2_000 + 60_000) });
    expect(nextDeadline(state, config)).toBe(T0 + 2_000 + 60_000);
    let retry = transition(state, { type: 'deadline' }, T0 + 62_000, config);
    expect(retry.state.restart).toMatchObject({
      inFlight: true,
      count: 2,
      retryAt: null,
      lastRequester: 'operator', // the retry is still the operator's restart
    });
    expect(retry.effects).toContainEqual(expect.objectContaining({ type: 'restartBox' }));
    // A second failure waits twice as long; a success clears the failures.
    state = apply(retry.state, { type: 'restartFinished', outcome: 'failed', error: 'box unreachable' }, T0 + 63_000);
    expect(state.restart).toMatchObject({ failures: 2, retryAt: iso(T0 + 63_000 + 120_000) });
    retry = transition(state, { type: 'deadline' }, T0 + 183_000, config);
    state = apply(retry.state, { type: 'restartFinished', outcome: 'succeeded' }, T0 + 184_000);
    expect(state.restart).toMatchObject({ failures: 0, retryAt: null });
  });

  it('strikes: two within 30 s declare dead; a strike after the window starts a new count', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    state = apply(state, { type: 'strike', requester: 'a' }, T0 + 1_000);
    expect(state.deadDetection.strikes).toMatchObject({ count: 1 });
    const late = apply(state, { type: 'strike', requester: 'a' }, T0 + 1_000 + config.strikeWindowMs + 1);
    expect(late.deadDetection.strikes).toMatchObject({
      count: 1,
      firstAt: iso(T0 + 1_000 + config.strikeWindowMs + 1),
    });
    expect(late.status).toBe('online');
    const dead = transition(
      state,
      { type: 'strike', requester: 'caller-x' },
      T0 + 1_000 + config.strikeWindowMs,
      config,
    );
    expect(dead.state.status).toBe('provisioning');
    expect(dead.state.restart).toMatchObject({ count: 1, lastRequester: 'caller-x', inFlight: true });
    expect(dead.effects.map((e) => e.type)).toEqual(['revokeTokens', 'restartBox', 'writeProjection']);
  });

  it('a running probe resets strikes', () => {
    let state = apply(start(), { type: 'strike', requester: 'a' });
    state = apply(state, { type: 'probed', result: 'running' });
    expect(state.deadDetection).toMatchObject({ strikes: null, lastProbe: { result: 'running' } });
  });

  it('settling lasts 30 s from the restart start; fresh means a heartbeat after it; recent means within 15 s', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    expect(isSettling(state, T0, config)).toBe(false);
    state = apply(state, { type: 'restartRequested', reason: 'ops', requester: 'operator' }, T0 + 1_000);
    expect(isSettling(state, T0 + 1_000 + config.settleWindowMs - 1, config)).toBe(true);
    expect(isSettling(state, T0 + 1_000 + config.settleWindowMs, config)).toBe(false);
    expect(hasFreshHeartbeat(state)).toBe(false);
    state = apply(state, { type: 'restartFinished', outcome: 'succeeded' }, T0 + 1_500);
    state = apply(state, { type: 'register', payload: registerPayload(ID) }, T0 + 1_800);
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID) }, T0 + 2_000);
    expect(hasFreshHeartbeat(state)).toBe(true);
    expect(hasRecentHeartbeat(state, T0 + 2_000 + config.recentHeartbeatMs, config)).toBe(true);
    expect(hasRecentHeartbeat(state, T0 + 2_001 + config.recentHeartbeatMs, config)).toBe(false);
  });

  it('after a restart only the new runtime counts: a heartbeat of the old one neither ends the restart nor is fresh', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    state = apply(state, { type: 'restartRequested', reason: 'ops', requester: 'operator' }, T0 + 1_000);
    // The old runtime's heartbeat, still in flight while the box restarts.
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID) }, T0 + 1_200);
    expect(state.status).toBe('provisioning');
    expect(state.restart.inFlight).toBe(true);
    expect(state.counters.heartbeats).toBe(1); // recorded all the same
    expect(hasFreshHeartbeat(state)).toBe(false);
    state = apply(state, { type: 'restartFinished', outcome: 'succeeded' }, T0 + 3_000);
    // A heartbeat after the restart, but no register of the new runtime yet: not fresh.
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID) }, T0 + 3_500);
    expect(hasFreshHeartbeat(state)).toBe(false);
    state = apply(state, { type: 'register', payload: registerPayload(ID) }, T0 + 4_000);
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID) }, T0 + 4_500);
    expect(hasFreshHeartbeat(state)).toBe(true);
    expect(state.status).toBe('online');
  });

  it('a restart requested while one is in flight becomes one follow-up; a dead removed workspace is not restarted', () => {
    let state = apply(start(), { type: 'restartRequested', reason: 'one', requester: 'operator' });
    state = apply(state, { type: 'restartRequested', reason: 'two', requester: 'operator' });
    state = apply(state, { type: 'restartRequested', reason: 'three', requester: 'reconcile' });
    expect(state.restart).toMatchObject({ count: 1, followUp: { reason: 'three', requester: 'reconcile' } });
    const next = transition(state, { type: 'restartFinished', outcome: 'succeeded' }, T0 + 5_000, config);
    expect(next.effects.filter((e) => e.type === 'restartBox')).toEqual([
      { type: 'restartBox', restartId: 'restart-2', reason: 'three', cause: 'requested' },
    ]);
    const removed = apply(start(), { type: 'deprovision' });
    expect(transition(removed, { type: 'deadDeclared', reason: 'x', requester: 'y' }, T0, config).effects).toEqual([]);
  });

  it('each restart says why in a word: dead, silent, reconcile, retry, requested (a follow-up keeps its own)', () => {
    const causes = (result: ReturnType<typeof transition>): string[] =>
      result.effects.flatMap((e) => (e.type === 'restartBox' ? [e.cause] : []));
    const online = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    expect(causes(transition(online, { type: 'deadDeclared', reason: 'x', requester: 'caller' }, T0, config))).toEqual([
      'dead',
    ]);
    const expire = (state: typeof online): { type: 'leaseExpired'; version: number; silentForMs: number } => ({
      type: 'leaseExpired',
      version: state.livenessContract?.version ?? 0,
      silentForMs: config.livenessTtlMs,
    });
    const offline = apply(online, expire(online), T0 + config.livenessTtlMs);
    expect(offline.status).toBe('offline');
    const silent = transition(offline, expire(offline), T0 + 2 * config.livenessTtlMs, config);
    expect(causes(silent)).toEqual(['silent']);
    const requested = apply(online, { type: 'restartRequested', reason: 'ops', requester: 'operator' }, T0 + 1_000);
    // A dead declaration while that restart runs becomes its follow-up, which keeps its cause.
    const pending = apply(requested, { type: 'deadDeclared', reason: 'x', requester: 'caller' }, T0 + 2_000);
    expect(causes(transition(pending, { type: 'restartFinished', outcome: 'succeeded' }, T0 + 3_000, config))).toEqual([
      'dead',
    ]);
    const failed = apply(requested, { type: 'restartFinished', outcome: 'failed', error: 'no box' }, T0 + 2_000);
    expect(causes(transition(failed, { type: 'deadline' }, T0 + 62_000, config))).toEqual(['retry']);
  });

  it('a dead declaration reports both status changes of its step to the projection: offline, then provisioning', () => {
    const online = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    const dead = transition(
      online,
      { type: 'deadDeclared', reason: 'not running', requester: 'caller' },
      T0 + 9,
      config,
    );
    expect(dead.effects.filter((e) => e.type === 'writeProjection')).toEqual([
      expect.objectContaining({
        status: 'provisioning',
        transitions: [
          { from: 'online', to: 'offline', cause: 'dead: not running', at: iso(T0 + 9) },
          { from: 'offline', to: 'provisioning', cause: 'restart: dead: not running', at: iso(T0 + 9) },
        ],
      }),
    ]);
  });
});
