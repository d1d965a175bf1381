/**
 * The state machine's entry point (workflows/state-machine.ts) on its own: no Temporal, no clocks,
 * every order of events; the rule that going online asks for a reconcile; the projection.
 * Each concern's rules: state-machine-{liveness,reconcile,restart}.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { defaultLifecycleConfig as config } from '../../workflows/config.js';
import {
  holdOf,
  initialState,
  livenessContract,
  nextDeadline,
  transition,
  upgradeState,
  type Event,
  type InitialStatus,
  type WorkspaceState,
} from '../../workflows/state-machine.js';
import { heartbeatPayload, registerPayload } from '../helpers/payloads.js';
import { apply, expireLease, frozen, ID, iso, onlineContract, start, T0 } from '../helpers/state-machine.js';

interface Step {
  name: string;
  /** The event, or how to make it from the state it meets. */
  event: Event | ((state: WorkspaceState) => Event);
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
  {
    name: 'lease-expired',
    event: (state) => ({
      type: 'leaseExpired',
      version: state.livenessContract?.version ?? 0,
      silentForMs: config.livenessTtlMs,
    }),
    advanceMs: config.livenessTtlMs,
  },
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
  {
    // The same pass, the ledger's last heartbeat reporting work in progress.
    name: 'reconcile-delivered-busy',
    event: {
      type: 'reconcileFinished',
      outcome: 'succeeded',
      report: {
        declared: 1,
        declaredNames: ['a'],
        outcomes: [{ name: 'a', status: 'installed', via: 'delivered', revision: 'r3' }],
        activeTasks: 1,
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
  {
    name: 'busy-heartbeat',
    event: { type: 'heartbeat', payload: heartbeatPayload(ID, { active_tasks: 2 }) },
    advanceMs: 1_000,
  },
  { name: 'cordon', event: { type: 'cordon', reason: 'incident', requester: 'operator' }, advanceMs: 1_000 },
  { name: 'uncordon', event: { type: 'uncordon', requester: 'operator' }, advanceMs: 1_000 },
];

/** What the checks carry along one order of events. */
interface PathFigures {
  reconcileEffects: number;
  followUps: number;
  removedSeen: boolean;
}

/** Independent statement of when a reconcile is owed: every transition into online. */
function expectedRequests(before: WorkspaceState, step: Step, now: number): number {
  const event = eventOf(step, before);
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

function eventOf(step: Step, state: WorkspaceState): Event {
  return typeof step.event === 'function' ? step.event(state) : step.event;
}

/** Plain assertion: the exhaustive loop runs hundreds of thousands of steps. */
function check(condition: boolean, where: string, what: string): void {
  if (!condition) throw new Error(`${what}\n  at ${where}`);
}

describe('exhaustive event orders', () => {
  const LENGTH = 4;
  for (const initial of ['provisioning', 'awaiting_agent'] as InitialStatus[]) {
    // CPU-bound (tens of thousands of orders): a timeout of its own, so a loaded machine does not fail it.
    it(`from ${initial}: every order of ${steps.length} events up to length ${LENGTH} keeps the invariants`, () => {
      let checked = 0;
      // Depth first: each order's prefix is checked once, and every order extends it from its state.
      const walk = (path: Step[], before: WorkspaceState, then: number, seen: PathFigures): void => {
        if (path.length === LENGTH) return;
        for (const step of steps) {
          const sequence = [...path, step];
          const now = then + step.advanceMs;
          let { reconcileEffects, followUps, removedSeen } = seen;
          const event = eventOf(step, before);
          const { state: after, effects } = transition(before, event, now, config);
          const where = `${initial}: ${sequence.map((s) => s.name).join(' → ')}`;
          const reconciles = effects.filter((e) => e.type === 'startReconcile');
          const restarts = effects.filter((e) => e.type === 'restartBox');

          // One reconcile request per transition into online, whatever caused it.
          const requested = after.counters.reconcilesRequested - before.counters.reconcilesRequested;
          // The contract the API forwards by is the one of the state the step left, at its time.
          const published = after.livenessContract;
          const current = livenessContract(after, now, config);
          check(
            published !== null &&
              JSON.stringify({ ...published, version: 0 }) === JSON.stringify({ ...current, version: 0 }),
            where,
            `published contract ${JSON.stringify(published)} ≠ ${JSON.stringify(current)}`,
          );
          // A deadline that fired is gone: the workflow never arms its timer again for a time passed.
          if (event.type === 'deadline') {
            const next = nextDeadline(after, config);
            check(next === null || next > now, where, `deadline ${next} again at ${now}`);
          }
          const writes = effects.filter((e) => e.type === 'writeProjection');
          check(writes.length <= 1, where, 'more than one projection write');
          if (writes[0] !== undefined)
            check(
              writes[0].version === published?.version &&
                (before.livenessContract === null || writes[0].version > before.livenessContract.version),
              where,
              'a write not newer than the one before',
            );
          check(requested === expectedRequests(before, step, now), where, `requested ${requested} reconciles`);
          if (before.recentTransitions.length < 10 && before.runtime === 'managed') {
            const added = after.recentTransitions.slice(
              0,
              after.recentTransitions.length - before.recentTransitions.length,
            );
            const registerWhileOnline = event.type === 'register' && before.status === 'online' ? requested : 0;
            check(
              added.filter((t) => t.to === 'online').length === requested - registerWhileOnline,
              where,
              'transitions into online ≠ requests',
            );
          }

          // Never two passes at once: a pass starts only when none runs, else it coalesces.
          check(reconciles.length <= 1 && restarts.length <= 1, where, 'more than one effect of a kind');
          if (reconciles.length === 1) {
            const finishing = event.type === 'reconcileFinished' && before.reconcile.followUp;
            check(!before.reconcile.running || finishing, where, 'a pass started while one ran');
            check(after.reconcile.running, where, 'started pass not marked running');
          }
          reconcileEffects += reconciles.length;
          // A pass held while cordoned starts on uncordon, as a follow-up does when a pass finishes.
          if (event.type === 'reconcileFinished' || event.type === 'uncordon') followUps += reconciles.length;
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
            step.name.startsWith('reconcile-delivered') && before.reconcile.running && before.status !== 'removed';
          const owed = (t: WorkspaceState): boolean => t.restart.followUp !== null || t.restart.held !== null;
          if (restartRequested) check(restarts.length === 1 || owed(after), where, 'restart request dropped');
          // An operator restart is never held: it starts, or follows the one in flight.
          if (event.type === 'restartRequested' && before.status !== 'removed' && before.runtime === 'managed')
            check(restarts.length === 1 || after.restart.followUp !== null, where, 'operator restart held');
          // A held restart waits on a hold that applies, never beside one in flight.
          const held = after.restart.held;
          if (held !== null) {
            check(!after.restart.inFlight, where, 'a restart held while one is in flight');
            check(holdOf(after, held, now, config) !== null, where, 'a restart held with nothing holding it');
          }
          // While cordoned nothing automatic restarts or delivers: only an operator's command does.
          if (before.cordon !== null && after.cordon !== null) {
            const operators = event.type === 'restartRequested' || event.type === 'reconcileRequested';
            const operatorFollowUp =
              (event.type === 'restartFinished' && before.restart.followUp?.cause === 'requested') ||
              (event.type === 'reconcileFinished' && before.reconcile.followUpByOperator);
            if (!operators && !operatorFollowUp)
              check(restarts.length === 0 && reconciles.length === 0, where, 'automatic work while cordoned');
          }
          if (restarts.length === 1) {
            const draining = event.type === 'restartFinished' && before.restart.followUp !== null;
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
            check(restarts.length === 1 || owed(after), where, 'dead without a restart');
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

          checked++;
          walk(sequence, after, now, { reconcileEffects, followUps, removedSeen });
        }
      };
      walk([], initialState(ID, initial, T0), T0, { reconcileEffects: 0, followUps: 0, removedSeen: false });
      // Every order of every length up to LENGTH, each step of it checked once.
      let orders = 0;
      for (let length = 1; length <= LENGTH; length++) orders += steps.length ** length;
      expect(checked).toBe(orders);
    }, 300_000);
  }

  it('never mutates its input', () => {
    let state = frozen(initialState(ID, 'provisioning', T0));
    let now = T0;
    for (const step of [...steps, ...steps]) {
      now += step.advanceMs;
      state = frozen(transition(state, eventOf(step, state), now, config).state);
    }
    expect(state.status).toBe('removed');
  });
});

describe('transitions', () => {
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
        version: T0 + 2, // from the workflow's start: 1 transition + 1 write
        deliveryMode: 'push',
        transitions: [{ from: 'provisioning', to: 'online', cause: 'register', at: iso(T0 + 5) }],
        contract: onlineContract(),
        leaseAgeMs: 0,
        restart: null,
        holds: { cordoned: false, crashLooping: false },
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

  it('rejections and transitions are kept bounded, newest first', () => {
    let state = start();
    for (let i = 0; i < 15; i++) state = apply(state, { type: 'heartbeat', payload: { workspace_id: i } });
    expect(state.counters.rejected).toBe(15);
    expect(state.recentRejections).toHaveLength(10);
  });

  it('a heartbeat from offline that is unhealthy comes online (reconcile) and then degrades', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) });
    state = expireLease(state, T0 + 1_000 + config.livenessTtlMs);
    expect(state.status).toBe('offline');
    const sick = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: 0.8 }) }, T0 + 500_000);
    expect(sick.status).toBe('degraded');
    expect(sick.recentTransitions.slice(0, 2).map((t) => `${t.from}→${t.to}`)).toEqual([
      'online→degraded',
      'offline→online',
    ]);
    expect(sick.counters.reconcilesRequested).toBe(2);
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
    const silent = transition(
      state,
      { type: 'leaseExpired', version: state.livenessContract?.version ?? 0, silentForMs: config.livenessTtlMs },
      T0 + config.livenessTtlMs,
      config,
    );
    expect(silent.state.status).toBe('awaiting_agent');
    expect(silent.effects.map((e) => e.type)).toEqual(['writeProjection']);
    expect(nextDeadline(silent.state, config)).toBeNull();
    state = apply(silent.state, { type: 'heartbeat', payload: heartbeatPayload(ID) }, T0 + config.livenessTtlMs + 5);
    expect(state.status).toBe('online');
  });

  it('a carried state that lacks a field takes it from a fresh state in the initial status', () => {
    const carried: Partial<WorkspaceState> = { ...start('awaiting_agent') };
    delete carried.runtime;
    expect(upgradeState(carried as WorkspaceState, 'awaiting_agent').runtime).toBe('external');
    expect(upgradeState(carried as WorkspaceState).runtime).toBe('managed');
  });

  it('a step writes the projection once, with its final values, only when status, url or contract changed', () => {
    const online = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    const offline = expireLease(online, T0 + config.livenessTtlMs);
    // offline → online → degraded in one heartbeat: one write, of the final status, reporting both changes.
    const sick = transition(
      offline,
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
        version: T0 + 7, // 4 transitions + the workspace's third projection write
        deliveryMode: 'push',
        transitions: [
          { from: 'offline', to: 'online', cause: 'heartbeat', at: iso(T0 + 200_000) },
          { from: 'online', to: 'degraded', cause: 'error rate 0.9 ≥ 0.5', at: iso(T0 + 200_000) },
        ],
        contract: expect.objectContaining({ want: 'recovering', leaseWatched: true }) as unknown,
        leaseAgeMs: 0,
        restart: null,
        holds: { cordoned: false, crashLooping: false },
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
});
