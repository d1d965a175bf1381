/** The pure state machine on its own: no Temporal, no clocks, every event order. */
import { describe, expect, it } from 'vitest';
import { defaultLifecycleConfig as config } from '../../workflows/config.js';
import {
  hasFreshHeartbeat,
  hasRecentHeartbeat,
  initialState,
  isSettling,
  heartbeatSignature,
  lastHeartbeatAt,
  nextDeadline,
  repairsToHold,
  statuses,
  transition,
  upgradeState,
  type Event,
  type ReconcileReport,
  type InitialStatus,
  type Status,
  type WorkspaceState,
} from '../../workflows/state-machine.js';
import { parseHeartbeat, type HeartbeatPayload } from '../../workflows/payloads.js';
import { heartbeatPayload, registerPayload } from '../helpers/payloads.js';

const heartbeatSchemaParse = (payload: unknown): HeartbeatPayload => {
  const parsed = parseHeartbeat(payload);
  if (!parsed.ok) throw new Error(parsed.reason);
  return parsed.value;
};

const ID = 'ws-1';
const T0 = Date.parse('2026-01-01T00:00:00Z');
const iso = (ms: number): string => new Date(ms).toISOString();

/** Deep-freezes so any mutation of the machine's input throws. */
function frozen<T>(value: T): T {
  if (value && typeof value === 'object') {
    Object.values(value).forEach(frozen);
    Object.freeze(value);
  }
  return value;
}

interface Step {
  name: string;
  event: Event;
  /** Time that passes before the event. */
  advanceMs: number;
}

const steps: Step[] = [
  { name: 'register', event: { type: 'register', payload: registerPayload(ID) }, advanceMs: 1_000 },
  { name: 'heartbeat', event: { type: 'heartbeat', payload: heartbeatPayload(ID) }, advanceMs: 1_000 },
  {
    name: 'sick-heartbeat',
    event: { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: 0.9 }) },
    advanceMs: 1_000,
  },
  { name: 'silence', event: { type: 'deadline' }, advanceMs: config.provisioningTimeoutMs + 1 },
  { name: 'reconcile-done', event: { type: 'reconcileFinished', outcome: 'succeeded' }, advanceMs: 1_000 },
  {
    name: 'reconcile-failed',
    event: { type: 'reconcileFinished', outcome: 'failed', error: 'boom' },
    advanceMs: 1_000,
  },
  {
    name: 'reconcile-delivered',
    event: {
      type: 'reconcileFinished',
      outcome: 'succeeded',
      report: {
        declared: 2,
        declaredNames: ['a', 'b'],
        outcomes: [
          { name: 'a', status: 'installed', via: 'delivered', revision: 'r1' },
          { name: 'b', status: 'installed', via: 'delivered', revision: 'r2' },
        ],
      },
    },
    advanceMs: 1_000,
  },
  { name: 'restart-done', event: { type: 'restartFinished', outcome: 'succeeded' }, advanceMs: 1_000 },
  {
    name: 'operator-restart',
    event: { type: 'restartRequested', reason: 'ops', requester: 'operator' },
    advanceMs: 1_000,
  },
  { name: 'probe-running', event: { type: 'probed', result: 'running' }, advanceMs: 1_000 },
  { name: 'strike', event: { type: 'strike', requester: 'dispatch' }, advanceMs: 10_000 },
  { name: 'dead', event: { type: 'deadDeclared', reason: 'not running', requester: 'dispatch' }, advanceMs: 1_000 },
  { name: 'deprovision', event: { type: 'deprovision' }, advanceMs: 1_000 },
];

function* sequences(length: number): Generator<Step[]> {
  if (length === 0) {
    yield [];
    return;
  }
  for (const prefix of sequences(length - 1)) for (const step of steps) yield [...prefix, step];
}

/** Independent statement of when a reconcile is owed: every transition into online. */
function expectedRequests(before: WorkspaceState, step: Step, now: number): number {
  const { event } = step;
  // Nothing is delivered to an external runtime.
  if (before.status === 'removed' || before.runtime === 'external') return 0;
  // Every register is a runtime boot: a verify pass, whether or not it brings the workspace online,
  // unless one was asked within the settle window (the same boot's register, repeated).
  if (event.type === 'register') {
    const lastVerify = before.reconcile.lastVerifyAt;
    const repeated = lastVerify !== null && now - Date.parse(lastVerify) < config.settleWindowMs;
    return before.status === 'online' && repeated ? 0 : 1;
  }
  if (event.type !== 'heartbeat') return 0;
  const sick = step.name === 'sick-heartbeat';
  if (before.status === 'online') return 0;
  if (before.status === 'degraded') return sick ? 0 : 1;
  // While a restart is in flight a heartbeat may be the old runtime's: it brings nothing online.
  if (before.restart.inFlight) return 0;
  return 1; // provisioning, offline, failed: any heartbeat comes online first
}

/** Plain assertion: the exhaustive loop runs hundreds of thousands of steps. */
function check(condition: boolean, where: string, what: string): void {
  if (!condition) throw new Error(`${what}\n  at ${where}`);
}

describe('exhaustive event orders', () => {
  const LENGTH = 4;
  for (const initial of ['provisioning', 'awaiting_agent'] as InitialStatus[]) {
    it(`from ${initial}: every order of ${steps.length} events up to length ${LENGTH} keeps the invariants`, () => {
      let checked = 0;
      for (const sequence of sequences(LENGTH)) {
        let state = initialState(ID, initial, T0);
        let now = T0;
        let reconcileEffects = 0;
        let followUps = 0;
        let removedSeen = false;
        for (const step of sequence) {
          now += step.advanceMs;
          const before = state;
          const { state: after, effects } = transition(before, step.event, now, config);
          const where = `${initial}: ${sequence.map((s) => s.name).join(' → ')} at ${step.name}`;
          const reconciles = effects.filter((e) => e.type === 'startReconcile');
          const restarts = effects.filter((e) => e.type === 'restartBox');

          // One reconcile request per transition into online, whatever caused it.
          const requested = after.counters.reconcilesRequested - before.counters.reconcilesRequested;
          check(requested === expectedRequests(before, step, now), where, `requested ${requested} reconciles`);
          if (before.recentTransitions.length < 10 && before.runtime === 'managed') {
            const added = after.recentTransitions.slice(
              0,
              after.recentTransitions.length - before.recentTransitions.length,
            );
            const registerWhileOnline = step.event.type === 'register' && before.status === 'online' ? requested : 0;
            check(
              added.filter((t) => t.to === 'online').length === requested - registerWhileOnline,
              where,
              'transitions into online ≠ requests',
            );
          }

          // Never two passes at once: a pass starts only when none runs, else it coalesces.
          check(reconciles.length <= 1 && restarts.length <= 1, where, 'more than one effect of a kind');
          if (reconciles.length === 1) {
            const finishing = step.event.type === 'reconcileFinished' && before.reconcile.followUp;
            check(!before.reconcile.running || finishing, where, 'a pass started while one ran');
            check(after.reconcile.running, where, 'started pass not marked running');
          }
          reconcileEffects += reconciles.length;
          if (step.event.type === 'reconcileFinished') followUps += reconciles.length;
          check(after.counters.reconcilesStarted === reconcileEffects, where, 'started counter ≠ effects');
          // Every pass is either a request that found nothing running, or an owed follow-up.
          check(
            after.counters.reconcilesStarted ===
              after.counters.reconcilesRequested - after.counters.reconcilesCoalesced + followUps,
            where,
            'passes ≠ requests − coalesced + follow-ups',
          );
          if (!after.reconcile.running) check(!after.reconcile.followUp, where, 'follow-up owed with nothing running');

          // One restart at a time; a restart request is never dropped; a restart clears the URL.
          const restartRequested =
            step.name === 'reconcile-delivered' && before.reconcile.running && before.status !== 'removed';
          if (restartRequested) {
            check(restarts.length === 1 || after.restart.followUp !== null, where, 'restart request dropped');
          }
          if (restarts.length === 1) {
            const draining = step.event.type === 'restartFinished' && before.restart.followUp !== null;
            check(!before.restart.inFlight || draining, where, 'restart started while one was in flight');
            check(after.status === 'provisioning' && after.url === null, where, 'restart did not clear status/url');
            check(after.restart.count === before.restart.count + 1, where, 'restart not counted');
          }
          if (!after.restart.inFlight)
            check(after.restart.followUp === null, where, 'restart follow-up with none in flight');

          // Dead: never online, URL cleared, tokens revoked, a restart started or owed; strikes reset.
          const declared = after.deadDetection.deadDeclarations > before.deadDetection.deadDeclarations;
          if (declared) {
            check(after.status !== 'online' && after.url === null, where, 'dead but still online or with a URL');
            check(
              effects.some((e) => e.type === 'revokeTokens'),
              where,
              'dead without revoking tokens',
            );
            check(restarts.length === 1 || after.restart.followUp !== null, where, 'dead without a restart');
            check(after.deadDetection.strikes === null, where, 'strikes survive a dead declaration');
          } else {
            check(!effects.some((e) => e.type === 'revokeTokens'), where, 'tokens revoked without a dead declaration');
          }
          check((after.deadDetection.strikes?.count ?? 0) < config.strikeThreshold, where, 'strikes at threshold');
          if (step.name === 'strike' && before.status !== 'removed') {
            const windowOpen =
              before.deadDetection.strikes !== null &&
              now - Date.parse(before.deadDetection.strikes.firstAt) <= config.strikeWindowMs;
            const expectDead = windowOpen && (before.deadDetection.strikes?.count ?? 0) + 1 >= config.strikeThreshold;
            check(declared === expectDead, where, `strike declared dead=${declared}, expected ${expectDead}`);
          }

          // Removed is terminal.
          if (removedSeen) check(after.status === 'removed', where, 'left removed');
          removedSeen ||= after.status === 'removed';

          state = after;
          checked++;
        }
      }
      expect(checked).toBe(steps.length ** LENGTH * LENGTH);
    });
  }

  it('never mutates its input', () => {
    let state = frozen(initialState(ID, 'provisioning', T0));
    let now = T0;
    for (const step of [...steps, ...steps]) {
      now += step.advanceMs;
      state = frozen(transition(state, step.event, now, config).state);
    }
    expect(state.status).toBe('removed');
  });
});

describe('transitions', () => {
  const start = (status: InitialStatus = 'provisioning'): WorkspaceState => frozen(initialState(ID, status, T0));
  const apply = (state: WorkspaceState, event: Event, at = T0 + 1_000): WorkspaceState =>
    transition(state, event, at, config).state;

  it('register records url, card and delivery mode and comes online with one reconcile', () => {
    const result = transition(start(), { type: 'register', payload: registerPayload(ID) }, T0 + 5, config);
    expect(result.state).toMatchObject({
      status: 'online',
      url: `http://box-${ID}.internal:8000`,
      deliveryMode: 'push',
      agentCard: { name: `agent ${ID}`, skills: 1 },
    });
    expect(result.effects).toEqual([
      { type: 'startReconcile', trigger: 'provisioning→online (register)', mode: 'verify' },
      {
        type: 'writeProjection',
        status: 'online',
        url: `http://box-${ID}.internal:8000`,
        statusSince: iso(T0 + 5),
        version: 2, // 1 transition + 1 write
        deliveryMode: 'push',
      },
    ]);
  });

  it('every projection change gets a newer version, a URL change without a status change too', () => {
    const versions: number[] = [];
    const urls: (string | null)[] = [];
    let state = start();
    let now = T0;
    for (const event of [
      { type: 'register', payload: registerPayload(ID) },
      { type: 'register', payload: registerPayload(ID, { url: 'http://moved.example:9000' }) },
      { type: 'register', payload: registerPayload(ID, { url: 'http://moved-again.example:9000' }) },
      { type: 'restartRequested', reason: 'operator', requester: 'operator' },
    ] satisfies Event[]) {
      now += 1_000;
      const result = transition(state, event, now, config);
      for (const effect of result.effects)
        if (effect.type === 'writeProjection') {
          versions.push(effect.version);
          urls.push(effect.url);
        }
      state = result.state;
    }
    expect(urls).toEqual([
      `http://box-${ID}.internal:8000`,
      'http://moved.example:9000',
      'http://moved-again.example:9000',
      null,
    ]);
    // The store keeps a write only when its version is newer than the row's.
    for (let i = 1; i < versions.length; i++) expect(versions[i]).toBeGreaterThan(versions[i - 1] ?? Infinity);
  });

  it('push mode without url or agent_card.url is rejected; poll mode needs none; agent_card.url is the fallback', () => {
    const noUrl = registerPayload(ID, { url: '', delivery_mode: undefined });
    const rejected = apply(start(), { type: 'register', payload: noUrl });
    expect(rejected.status).toBe('provisioning');
    expect(rejected.recentRejections[0]?.reason).toMatch(/url is required for push-mode/);

    expect(apply(start(), { type: 'register', payload: { ...noUrl, delivery_mode: 'poll' } })).toMatchObject({
      status: 'online',
      url: null,
      deliveryMode: 'poll',
    });
    const cardUrl = { ...noUrl, agent_card: { url: 'https://agent.example/a2a' } };
    expect(apply(start(), { type: 'register', payload: cardUrl }).url).toBe('https://agent.example/a2a');
  });

  it('the stored delivery mode wins over the push default on a later register', () => {
    const poll = apply(start(), { type: 'register', payload: registerPayload(ID, { delivery_mode: 'poll', url: '' }) });
    const again = apply(poll, { type: 'register', payload: { id: ID, agent_card: {} } });
    expect(again.deliveryMode).toBe('poll');
    expect(again.counters.registers).toBe(2);
  });

  it('register never resurrects a removed workspace', () => {
    const removed = apply(start(), { type: 'deprovision' });
    const after = apply(removed, { type: 'register', payload: registerPayload(ID) });
    expect(after.status).toBe('removed');
    expect(after.counters.reconcilesRequested).toBe(0);
    expect(after.recentRejections[0]?.reason).toMatch(/removed/);
    expect(apply(removed, { type: 'heartbeat', payload: heartbeatPayload(ID) }).status).toBe('removed');
  });

  it('payloads for another workspace and malformed payloads are rejected with the field named', () => {
    const state = start();
    expect(apply(state, { type: 'heartbeat', payload: heartbeatPayload('other') }).recentRejections[0]?.reason).toMatch(
      /workspace_id "other" does not match workspace ws-1/,
    );
    const bad = apply(state, { type: 'heartbeat', payload: { workspace_id: ID, active_tasks: -1, error_rate: 2 } });
    expect(bad.counters.rejected).toBe(1);
    expect(bad.recentRejections[0]?.reason).toMatch(/error_rate: .*<=1/);
    expect(bad.recentRejections[0]?.reason).toMatch(/active_tasks: .*>=0/);
    expect(apply(state, { type: 'register', payload: null }).recentRejections[0]).toMatchObject({ signal: 'register' });
  });

  it('rejections and transitions are kept bounded, newest first', () => {
    let state = start();
    for (let i = 0; i < 15; i++) state = apply(state, { type: 'heartbeat', payload: { workspace_id: i } });
    expect(state.counters.rejected).toBe(15);
    expect(state.recentRejections).toHaveLength(10);
  });

  it('degrades on error_rate ≥ 0.5 or wedged unless the runtime manages its own status', () => {
    const online = apply(start(), { type: 'register', payload: registerPayload(ID) });
    expect(apply(online, { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: 0.5 }) }).status).toBe(
      'degraded',
    );
    expect(apply(online, { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: 0.49 }) }).status).toBe(
      'online',
    );
    expect(
      apply(online, { type: 'heartbeat', payload: heartbeatPayload(ID, { runtime_state: 'wedged' }) }).status,
    ).toBe('degraded');
    const selfManaged = heartbeatPayload(ID, {
      error_rate: 0.9,
      runtime_metadata: { capabilities: { status_mgmt: true } },
    });
    expect(apply(online, { type: 'heartbeat', payload: selfManaged }).status).toBe('online');
  });

  it('recovers from degraded only below 0.1 with a clear runtime state, and that recovery reconciles', () => {
    const online = apply(start(), { type: 'register', payload: registerPayload(ID) });
    const degraded = frozen(apply(online, { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: 0.7 }) }));
    expect(apply(degraded, { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: 0.1 }) }).status).toBe(
      'degraded',
    );
    const back = transition(
      degraded,
      { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: 0.09 }) },
      T0 + 9,
      config,
    );
    expect(back.state.status).toBe('online');
    // The first pass (from register) is still running: the recovery's request coalesces.
    expect(back.state.counters).toMatchObject({ reconcilesRequested: 2, reconcilesCoalesced: 1 });
  });

  it('a heartbeat from offline that is unhealthy comes online (reconcile) and then degrades', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) });
    state = apply(state, { type: 'deadline' }, T0 + 1_000 + config.livenessTtlMs);
    expect(state.status).toBe('offline');
    const sick = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: 0.8 }) }, T0 + 500_000);
    expect(sick.status).toBe('degraded');
    expect(sick.recentTransitions.slice(0, 2).map((t) => `${t.from}→${t.to}`)).toEqual([
      'online→degraded',
      'offline→online',
    ]);
    expect(sick.counters.reconcilesRequested).toBe(2);
  });

  it('liveness: offline only after the full TTL of silence; every heartbeat pushes the deadline', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    expect(nextDeadline(state, config)).toBe(T0 + config.livenessTtlMs);
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID) }, T0 + 100_000);
    expect(nextDeadline(state, config)).toBe(T0 + 100_000 + config.livenessTtlMs);
    expect(apply(state, { type: 'deadline' }, T0 + 100_000 + config.livenessTtlMs - 1).status).toBe('online');
    const offline = apply(state, { type: 'deadline' }, T0 + 100_000 + config.livenessTtlMs);
    expect(offline.status).toBe('offline');
    expect(offline.recentTransitions[0]?.cause).toBe('no heartbeat for 180s');
    // Offline is never parked: still silent a TTL later (a hung runtime whose box probes running),
    // the box is restarted.
    expect(nextDeadline(offline, config)).toBe(T0 + 100_000 + 2 * config.livenessTtlMs);
    const stillSilent = transition(offline, { type: 'deadline' }, T0 + 100_000 + 2 * config.livenessTtlMs, config);
    expect(stillSilent.state.status).toBe('provisioning');
    expect(stillSilent.state.restart).toMatchObject({ count: 1, inFlight: true, lastRequester: 'watchdog' });
    expect(stillSilent.effects).toContainEqual(expect.objectContaining({ type: 'restartBox' }));
  });

  it('offline while a restart is in flight has no deadline of its own: the restart answers it (no timer spin)', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    state = apply(state, { type: 'restartRequested', reason: 'ops', requester: 'operator' }, T0 + 1_000);
    state = apply(state, { type: 'register', payload: registerPayload(ID) }, T0 + 2_000); // restart still in flight
    state = apply(state, { type: 'deadline' }, T0 + 2_000 + config.livenessTtlMs);
    expect(state.status).toBe('offline');
    expect(state.restart.inFlight).toBe(true);
    expect(nextDeadline(state, config)).toBeNull();
  });

  it('a failed restart is not asked again once the new runtime registered (unless it was to load plugins)', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    state = apply(state, { type: 'restartRequested', reason: 'ops', requester: 'operator' }, T0 + 1_000);
    state = apply(state, { type: 'restartFinished', outcome: 'failed', error: 'box unreachable' }, T0 + 2_000);
    expect(state.restart.retryAt).not.toBeNull();
    state = apply(state, { type: 'register', payload: registerPayload(ID) }, T0 + 3_000);
    expect(state.restart).toMatchObject({ retryAt: null, failures: 0 });
    expect(nextDeadline(state, config)).toBe(T0 + 3_000 + config.livenessTtlMs);
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

  it('provisioning timeout: failed after 12 minutes, and a late heartbeat recovers it with a reconcile', () => {
    const state = start();
    expect(nextDeadline(state, config)).toBe(T0 + config.provisioningTimeoutMs);
    expect(apply(state, { type: 'deadline' }, T0 + config.provisioningTimeoutMs - 1).status).toBe('provisioning');
    const failed = frozen(apply(state, { type: 'deadline' }, T0 + config.provisioningTimeoutMs));
    expect(failed.status).toBe('failed');
    const late = transition(failed, { type: 'heartbeat', payload: heartbeatPayload(ID) }, T0 + 800_000, config);
    expect(late.state.status).toBe('online');
    expect(late.effects).toEqual([
      { type: 'startReconcile', trigger: 'failed→online (heartbeat)', mode: 'verify' },
      {
        type: 'writeProjection',
        status: 'online',
        url: null,
        statusSince: iso(T0 + 800_000),
        version: 4, // 2 transitions + 2 writes
        deliveryMode: null,
      },
    ]);
  });

  it.each<Status>(['failed', 'awaiting_agent', 'removed'])('no deadline applies while %s', (status) => {
    expect(nextDeadline({ ...start(), status }, config)).toBeNull();
  });

  it('an external runtime comes online on its first heartbeat, with nothing delivered to it', () => {
    const result = transition(
      start('awaiting_agent'),
      { type: 'heartbeat', payload: heartbeatPayload(ID) },
      T0,
      config,
    );
    expect(result.state).toMatchObject({ status: 'online', runtime: 'external' });
    expect(result.effects.map((e) => e.type)).toEqual(['writeProjection']);
    expect(result.state.counters.reconcilesRequested).toBe(0);
  });

  it('an external runtime is never probed, declared dead, restarted or delivered to; silent, it awaits its agent', () => {
    let state = apply(
      start('awaiting_agent'),
      { type: 'register', payload: registerPayload(ID, { url: '', delivery_mode: undefined }) },
      T0,
    );
    // No URL and no mode: an external runtime polls (the service may not reach it).
    expect(state).toMatchObject({ status: 'online', deliveryMode: 'poll', runtime: 'external' });
    const declared = transition(state, { type: 'pluginsDeclared' }, T0 + 1, config);
    expect(declared.effects).toEqual([]);
    const restart = transition(
      state,
      { type: 'restartRequested', reason: 'ops', requester: 'operator' },
      T0 + 2,
      config,
    );
    expect(restart.effects).toEqual([]);
    expect(restart.state.restart.count).toBe(0);
    expect(restart.state.recentRejections[0]).toMatchObject({
      signal: 'restart',
      reason: 'ops: the runtime is external; restart it where it runs',
    });
    const dead = transition(state, { type: 'deadDeclared', reason: 'x', requester: 'y' }, T0 + 3, config);
    expect(dead.effects).toEqual([]);
    expect(dead.state.status).toBe('online');

    // Silent for the TTL: back to awaiting_agent, with no evaluation (no probe) and no deadline after.
    const silent = transition(state, { type: 'deadline' }, T0 + config.livenessTtlMs, config);
    expect(silent.state.status).toBe('awaiting_agent');
    expect(silent.effects.map((e) => e.type)).toEqual(['writeProjection']);
    expect(nextDeadline(silent.state, config)).toBeNull();
    state = apply(silent.state, { type: 'heartbeat', payload: heartbeatPayload(ID) }, T0 + config.livenessTtlMs + 5);
    expect(state.status).toBe('online');
  });

  it('a managed workspace keeps push as its default mode', () => {
    expect(apply(start(), { type: 'register', payload: registerPayload(ID) }, T0).deliveryMode).toBe('push');
  });

  it('a carried state that lacks a field takes it from a fresh state in the initial status', () => {
    const carried: Partial<WorkspaceState> = { ...start('awaiting_agent') };
    delete carried.runtime;
    expect(upgradeState(carried as WorkspaceState, 'awaiting_agent').runtime).toBe('external');
    expect(upgradeState(carried as WorkspaceState).runtime).toBe('managed');
  });

  it('a step writes the projection once, with its final values, only when status or url changed', () => {
    const online = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    const offline = transition(online, { type: 'deadline' }, T0 + config.livenessTtlMs, config);
    // offline → online → degraded in one heartbeat: one write, of the final status.
    const sick = transition(
      offline.state,
      { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: 0.9 }) },
      T0 + 200_000,
      config,
    );
    expect(sick.effects.filter((e) => e.type === 'writeProjection')).toEqual([
      {
        type: 'writeProjection',
        status: 'degraded',
        url: `http://box-${ID}.internal:8000`,
        statusSince: iso(T0 + 200_000),
        version: 7, // 4 transitions + the workspace's third projection write
        deliveryMode: 'push',
      },
    ]);
    const same = transition(
      sick.state,
      { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: 0.9 }) },
      T0 + 201_000,
      config,
    );
    expect(same.effects).toEqual([]);
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
      { type: 'restartBox', restartId: 'restart-2', reason: 'three' },
    ]);
    const removed = apply(start(), { type: 'deprovision' });
    expect(transition(removed, { type: 'deadDeclared', reason: 'x', requester: 'y' }, T0, config).effects).toEqual([]);
  });

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

  it('a forwarded heartbeat counts the ones coalesced before it; the ledger moves the last heartbeat time up, never past now', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID) }, T0 + 1_000);
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID), beats: 4 }, T0 + 120_000);
    expect(state.counters.heartbeats).toBe(5);
    // A malformed count counts the one heartbeat.
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID), beats: -3 }, T0 + 121_000);
    expect(state.counters.heartbeats).toBe(6);
    const seen = (lastSeenAt: string | null, now: number): WorkspaceState =>
      transition(state, { type: 'heartbeatsSeen', lastSeenAt }, now, config).state;
    const known = (s: WorkspaceState): number | null => lastHeartbeatAt(s);
    expect(known(seen(iso(T0 + 150_000), T0 + 170_000))).toBe(T0 + 150_000);
    expect(known(seen(iso(T0 + 100_000), T0 + 170_000))).toBe(T0 + 121_000); // older: kept
    expect(known(seen(iso(T0 + 500_000), T0 + 170_000))).toBe(T0 + 170_000); // clamped to now
    expect(seen(null, T0 + 170_000)).toEqual(state);
    // The forwarded heartbeat itself stays what it was.
    expect(seen(iso(T0 + 150_000), T0 + 170_000).lastHeartbeat).toEqual(state.lastHeartbeat);
    // Only the time moves: counts and health fields stay the forwarded heartbeat's.
    expect(seen(iso(T0 + 150_000), T0 + 170_000).counters).toEqual(state.counters);
    // The liveness deadline follows the ledger.
    const caughtUp = seen(iso(T0 + 150_000), T0 + 170_000);
    expect(nextDeadline(caughtUp, config)).toBe(T0 + 150_000 + config.livenessTtlMs);
  });

  it('heartbeats only in the ledger (none forwarded since the register) still count: recent, fresh, and for the TTL', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    expect(state.lastHeartbeat).toBeNull();
    state = transition(state, { type: 'heartbeatsSeen', lastSeenAt: iso(T0 + 100_000) }, T0 + 110_000, config).state;
    expect(state.lastHeartbeat).toBeNull();
    expect(hasRecentHeartbeat(state, T0 + 110_000, config)).toBe(true);
    expect(nextDeadline(state, config)).toBe(T0 + 100_000 + config.livenessTtlMs);
    const silent = transition(state, { type: 'deadline' }, T0 + 100_000 + config.livenessTtlMs, config).state;
    expect(silent.status).toBe('offline');
  });

  it('heartbeats with one signature lead to the same transitions from every status; the signature tells the classes apart', () => {
    const sign = (overrides: Parameters<typeof heartbeatPayload>[1]): string =>
      heartbeatSignature(heartbeatSchemaParse(heartbeatPayload(ID, overrides)), config).signature;
    expect(sign({ error_rate: 0.2, uptime_seconds: 5 })).toBe(
      sign({ error_rate: 0.3, uptime_seconds: 9, active_tasks: 4 }),
    );
    expect(sign({ error_rate: 0 })).not.toBe(sign({ error_rate: 0.2 })); // recovers vs holds
    expect(sign({ error_rate: 0.2 })).not.toBe(sign({ error_rate: 0.6 })); // holds vs degrades
    expect(sign({ runtime_state: 'wedged' })).not.toBe(sign({}));
    expect(sign({ runtime_metadata: { capabilities: { status_mgmt: true } } })).not.toBe(sign({}));
    expect(sign({ agent_card: { name: 'a' } })).not.toBe(sign({}));
    // Same signature, same outcome: from each status, two heartbeats of a class do the same thing.
    for (const status of statuses.filter((s) => s !== 'removed')) {
      const from = { ...start(), status };
      const outcome = (rate: number): Status =>
        transition(from, { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: rate }) }, T0 + 1, config)
          .state.status;
      expect(outcome(0.2)).toBe(outcome(0.3));
      expect(outcome(0.6)).toBe(outcome(0.9));
      expect(outcome(0)).toBe(outcome(0.05));
    }
  });

  it('monthly spend 0 means no update; values are clamped to the reference cap', () => {
    let state = apply(start(), { type: 'heartbeat', payload: heartbeatPayload(ID, { monthly_spend: 1234 }) });
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID, { monthly_spend: 0 }) });
    expect(state.lastHeartbeat?.monthlySpend).toBe(1234);
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID, { monthly_spend: 5e15 }) });
    expect(state.lastHeartbeat?.monthlySpend).toBe(1e12);
  });
});

describe('plugin lifecycle', () => {
  const start = (): WorkspaceState => frozen(initialState(ID, 'provisioning', T0));
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
      { type: 'restartBox', restartId: 'restart-1', reason: 'reconcile delivered 2 and removed 1 plugin(s)' },
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
    // Heartbeats keep the liveness deadline later than the resync.
    const beating = step(state, { type: 'heartbeat', payload: heartbeatPayload(ID) }, due - 1_000).state;
    expect(nextDeadline(beating, config)).toBe(due);
    const fired = step(beating, { type: 'deadline' }, due);
    expect(fired.effects).toContainEqual({ type: 'startReconcile', trigger: 'periodic resync', mode: 'verify' });
    expect(nextDeadline(fired.state, config)).toBe(
      Date.parse(fired.state.lastHeartbeat?.at ?? '') + config.livenessTtlMs,
    );
    expect(fired.state.reconcile.lastVerifyAt).toBe(iso(due));

    expect(nextDeadline(beating, { ...config, resyncPeriodMs: 0 })).toBe(due - 1_000 + config.livenessTtlMs);
    // Not while the runtime is down: its register will verify.
    expect(nextDeadline({ ...beating, status: 'offline', statusSince: iso(due) }, config)).toBe(
      due + config.livenessTtlMs,
    );
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
