/**
 * The state machine's liveness rules (workflows/state-machine/liveness.ts): register,
 * heartbeats, health, the liveness contract and its forward rule, lease expiry and the
 * provisioning timeout.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { defaultLifecycleConfig as config } from '../../workflows/config.js';
import {
  heartbeatFacts,
  heartbeatWanted,
  initialState,
  livenessContract,
  nextDeadline,
  transition,
  type ContractRow,
  type Event,
  type HeartbeatFacts,
  type Status,
  type WorkspaceState,
} from '../../workflows/state-machine.js';
import { parseHeartbeat } from '../../workflows/payloads.js';
import { heartbeatPayload, registerPayload } from '../helpers/payloads.js';
import { apply, expireLease, frozen, ID, iso, start, T0 } from '../helpers/state-machine.js';

const facts = (overrides: Parameters<typeof heartbeatPayload>[1] = {}): HeartbeatFacts => {
  const parsed = parseHeartbeat(heartbeatPayload(ID, overrides));
  if (!parsed.ok) throw new Error(parsed.reason);
  return heartbeatFacts(parsed.value);
};
/** The state's published contract as the ledger row holds it, nothing delivered for it yet. */
const rowOf = (state: WorkspaceState): ContractRow => {
  const published = state.livenessContract;
  if (published === null) throw new Error('nothing published');
  return { ...published, wantVersion: published.version, deliveredVersion: published.version - 1 };
};

describe('liveness', () => {
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

  it("silence is the fleet controller's: no liveness timer; an expired lease takes a live workspace offline, a TTL more restarts it", () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID) }, T0 + 100_000);
    expect(nextDeadline(state, { ...config, resyncPeriodMs: 0 })).toBeNull();
    const offline = transition(
      state,
      { type: 'leaseExpired', version: state.livenessContract?.version ?? 0, silentForMs: config.livenessTtlMs },
      T0 + 100_000 + config.livenessTtlMs,
      config,
    );
    expect(offline.state.status).toBe('offline');
    expect(offline.state.recentTransitions[0]?.cause).toBe('no heartbeat for 180s');
    expect(offline.effects).toContainEqual({ type: 'evaluate', requester: 'watchdog' });
    // Offline's lease is watched too, from the moment it went offline: a hung runtime whose box
    // probes running is not parked offline.
    expect(offline.state.livenessContract).toMatchObject({ want: 'any', leaseWatched: true });
    const stillSilent = transition(
      offline.state,
      {
        type: 'leaseExpired',
        version: offline.state.livenessContract?.version ?? 0,
        silentForMs: config.livenessTtlMs,
      },
      T0 + 100_000 + 2 * config.livenessTtlMs,
      config,
    );
    expect(stillSilent.state.status).toBe('provisioning');
    expect(stillSilent.state.restart).toMatchObject({ count: 1, inFlight: true, lastRequester: 'watchdog' });
    expect(stillSilent.effects).toContainEqual(expect.objectContaining({ type: 'restartBox' }));
  });

  it('an expiry of an older contract is stale: nothing changes', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    const old = state.livenessContract?.version ?? 0;
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: 0.9 }) }, T0 + 1_000);
    expect(state.livenessContract?.version).toBeGreaterThan(old);
    const stale = transition(
      state,
      { type: 'leaseExpired', version: old, silentForMs: config.livenessTtlMs },
      T0 + 1_000 + config.livenessTtlMs,
      config,
    );
    expect(stale.state).toEqual(state);
    expect(stale.effects).toEqual([]);
  });

  it("an expiry the workflow's own clock does not confirm (a forwarded heartbeat the ledger missed) publishes the lease again", () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    const version = state.livenessContract?.version ?? 0;
    // Forwarded at 100 s, changing nothing: no write, so the ledger's lease may lack it.
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID) }, T0 + 100_000);
    expect(state.livenessContract?.version).toBe(version);
    const renewed = transition(
      state,
      { type: 'leaseExpired', version, silentForMs: config.livenessTtlMs },
      T0 + config.livenessTtlMs,
      config,
    );
    expect(renewed.state.status).toBe('online');
    expect(renewed.effects).toEqual([
      expect.objectContaining({
        type: 'writeProjection',
        status: 'online',
        leaseAgeMs: config.livenessTtlMs - 100_000,
      }),
    ]);
    expect(renewed.state.livenessContract?.version).toBeGreaterThan(version);
  });

  it('offline while a restart is in flight: its lease is not watched, the restart answers it', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    state = apply(state, { type: 'restartRequested', reason: 'ops', requester: 'operator' }, T0 + 1_000);
    state = apply(state, { type: 'register', payload: registerPayload(ID) }, T0 + 2_000); // restart still in flight
    state = expireLease(state, T0 + 2_000 + config.livenessTtlMs);
    expect(state.status).toBe('offline');
    expect(state.restart.inFlight).toBe(true);
    expect(state.livenessContract).toMatchObject({ leaseWatched: false, want: 'none' });
    expect(nextDeadline(state, config)).toBeNull();
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
        version: T0 + 4, // 2 transitions + 2 writes
        deliveryMode: null,
        transitions: [{ from: 'failed', to: 'online', cause: 'heartbeat', at: iso(T0 + 800_000) }],
        contract: expect.objectContaining({ want: 'degrading', hasCard: false }) as unknown,
        leaseAgeMs: 0,
        restart: null,
        holds: { cordoned: false, crashLooping: false },
      },
    ]);
  });

  it.each<Status>(['online', 'degraded', 'offline', 'failed', 'awaiting_agent', 'removed'])(
    'no deadline applies while %s',
    (status) => {
      expect(nextDeadline({ ...start(), status }, config)).toBeNull();
    },
  );

  it('a managed workspace keeps push as its default mode', () => {
    expect(apply(start(), { type: 'register', payload: registerPayload(ID) }, T0).deliveryMode).toBe('push');
  });

  it('monthly spend 0 means no update; values are clamped to the reference cap', () => {
    let state = apply(start(), { type: 'heartbeat', payload: heartbeatPayload(ID, { monthly_spend: 1234 }) });
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID, { monthly_spend: 0 }) });
    expect(state.lastHeartbeat?.monthlySpend).toBe(1234);
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID, { monthly_spend: 5e15 }) });
    expect(state.lastHeartbeat?.monthlySpend).toBe(1e12);
  });
});

describe('the liveness contract', () => {
  it('what each status wants: any heartbeat until online, then what degrades or recovers; nothing while a restart is in flight', () => {
    const provisioning = start();
    expect(livenessContract(provisioning, T0, config)).toEqual({
      want: 'any',
      degradeErrorRate: 0.5,
      recoverErrorRate: 0.1,
      hasCard: false,
      leaseWatched: false,
      leaseTtlMs: 180_000,
    });
    const online = apply(provisioning, { type: 'register', payload: registerPayload(ID) }, T0);
    expect(online.livenessContract).toMatchObject({ want: 'degrading', hasCard: true, leaseWatched: true });
    const degraded = apply(online, { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: 0.7 }) }, T0 + 1);
    expect(degraded.livenessContract).toMatchObject({ want: 'recovering', leaseWatched: true });
    const restarting = apply(degraded, { type: 'restartRequested', reason: 'ops', requester: 'operator' }, T0 + 2);
    expect(restarting.livenessContract).toMatchObject({ want: 'none', leaseWatched: false });
    const restarted = apply(restarting, { type: 'restartFinished', outcome: 'succeeded' }, T0 + 3);
    expect(restarted.livenessContract).toMatchObject({ want: 'any', leaseWatched: false });
    const removed = apply(restarted, { type: 'deprovision' }, T0 + 4);
    expect(removed.livenessContract).toMatchObject({ want: 'none', leaseWatched: false });
    // The thresholds are the workflow's own.
    const strict = { ...config, degradeErrorRate: 0.3, recoverErrorRate: 0.05 };
    expect(livenessContract(online, T0, strict)).toMatchObject({ degradeErrorRate: 0.3, recoverErrorRate: 0.05 });
  });

  it('a settle window wants any heartbeat until one from after the restart arrived; its end, a deadline, republishes the want', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    state = apply(state, { type: 'restartRequested', reason: 'ops', requester: 'operator' }, T0 + 1_000);
    state = apply(state, { type: 'restartFinished', outcome: 'succeeded' }, T0 + 3_000);
    state = apply(state, { type: 'register', payload: registerPayload(ID) }, T0 + 5_000);
    expect(state.livenessContract).toMatchObject({ want: 'any' });
    const settleEnd = T0 + 1_000 + config.settleWindowMs;
    expect(nextDeadline(state, config)).toBe(settleEnd);
    // Its end: the want becomes what an online workspace wants, in a write of its own.
    const ended = transition(state, { type: 'deadline' }, settleEnd, config);
    expect(ended.state.livenessContract).toMatchObject({ want: 'degrading' });
    expect(ended.effects.map((e) => e.type)).toEqual(['writeProjection']);
    // The window's deadline is gone: the timer is not armed again for a time already passed.
    expect(nextDeadline(ended.state, config) ?? Infinity).toBeGreaterThan(settleEnd);
    // A heartbeat from after the restart ends the want before that.
    const beat = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID) }, T0 + 6_000);
    expect(beat.livenessContract).toMatchObject({ want: 'degrading' });
    expect(nextDeadline(beat, config)).not.toBe(settleEnd);
  });

  it('the forward rule: once per contract, what the want asks for or a first agent card', () => {
    const online = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    const row = rowOf(online);
    expect(heartbeatWanted(row, facts({ error_rate: 0.5 }))).toBe(true);
    expect(heartbeatWanted(row, facts({ runtime_state: 'wedged' }))).toBe(true);
    expect(heartbeatWanted(row, facts({ error_rate: 0.3 }))).toBe(false);
    expect(
      heartbeatWanted(row, facts({ error_rate: 0.9, runtime_metadata: { capabilities: { status_mgmt: true } } })),
    ).toBe(false);
    // Delivered once for this contract: the rest wait for the next.
    expect(heartbeatWanted({ ...row, deliveredVersion: row.wantVersion }, facts({ error_rate: 0.9 }))).toBe(false);
    const heartbeatOnly = apply(start(), { type: 'heartbeat', payload: heartbeatPayload(ID) }, T0);
    expect(heartbeatWanted(rowOf(heartbeatOnly), facts({ agent_card: { name: 'a' } }))).toBe(true);
    expect(heartbeatWanted(rowOf(heartbeatOnly), facts())).toBe(false);
    const degraded = apply(online, { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: 0.7 }) }, T0 + 1);
    expect(heartbeatWanted(rowOf(degraded), facts({ error_rate: 0.09 }))).toBe(true);
    expect(heartbeatWanted(rowOf(degraded), facts({ error_rate: 0.1 }))).toBe(false);
    expect(heartbeatWanted(rowOf(degraded), facts({ error_rate: 0, runtime_state: 'wedged' }))).toBe(false);
  });

  it('every wanted heartbeat changes the contract it was wanted under; every other changes no status', () => {
    const events: fc.Arbitrary<Event> = fc.oneof(
      fc.constant<Event>({ type: 'register', payload: registerPayload(ID) }),
      fc.constant<Event>({ type: 'register', payload: { id: ID, agent_card: {}, delivery_mode: 'poll' } }),
      fc
        .record({ error_rate: fc.constantFrom(0, 0.05, 0.3, 0.7), runtime_state: fc.constantFrom('', 'wedged') })
        .map((o): Event => ({ type: 'heartbeat', payload: heartbeatPayload(ID, o as { runtime_state: '' }) })),
      fc.constant<Event>({ type: 'restartRequested', reason: 'ops', requester: 'operator' }),
      fc.constant<Event>({ type: 'restartFinished', outcome: 'succeeded' }),
      fc.constant<Event>({ type: 'deadline' }),
      fc.constant<Event>({ type: 'deadDeclared', reason: 'x', requester: 'y' }),
      fc.constant<Event>({ type: 'strike', requester: 'y' }),
    );
    const beat = fc.record({
      error_rate: fc.constantFrom(0, 0.05, 0.1, 0.3, 0.5, 0.9),
      runtime_state: fc.constantFrom('' as const, 'wedged' as const),
      runtime_metadata: fc.constantFrom(undefined, { capabilities: { status_mgmt: true } }),
      agent_card: fc.constantFrom(undefined, { name: 'card' }),
    });
    fc.assert(
      fc.property(
        fc.constantFrom('provisioning' as const, 'awaiting_agent' as const),
        fc.array(fc.tuple(events, fc.integer({ min: 0, max: 200_000 })), { maxLength: 12 }),
        beat,
        fc.integer({ min: 0, max: 60_000 }),
        (initial, sequence, overrides, wait) => {
          let state = initialState(ID, initial, T0);
          let now = T0;
          for (const [event, advance] of sequence) {
            now += advance;
            state = transition(state, event, now, config).state;
          }
          // A contract is published by the first step; before it, the row's default wants any.
          if (state.livenessContract === null) return;
          now += wait;
          // Nothing happened meanwhile but time: a deadline that fell due was served first.
          const due = nextDeadline(state, config);
          if (due !== null && due <= now) state = transition(state, { type: 'deadline' }, now, config).state;
          const payload = heartbeatPayload(
            ID,
            Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)),
          );
          const parsed = parseHeartbeat(payload);
          if (!parsed.ok) throw new Error(parsed.reason);
          const wanted = heartbeatWanted(rowOf(state), heartbeatFacts(parsed.value));
          const after = transition(state, { type: 'heartbeat', payload }, now, config).state;
          if (wanted) expect(after.livenessContract?.version).toBeGreaterThan(state.livenessContract?.version ?? 0);
          else expect(after.status).toBe(state.status);
          if (!wanted) expect(after.agentCard !== null).toBe(state.agentCard !== null);
        },
      ),
      { numRuns: 3_000, seed: 29 },
    );
  });

  it('a write carries its times as ages: since the last sign of life, since the restart began', () => {
    let state = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0);
    state = apply(state, { type: 'heartbeat', payload: heartbeatPayload(ID) }, T0 + 10_000);
    const restart = transition(
      state,
      { type: 'restartRequested', reason: 'ops', requester: 'operator' },
      T0 + 40_000,
      config,
    );
    expect(restart.effects).toContainEqual(
      expect.objectContaining({
        type: 'writeProjection',
        leaseAgeMs: 0, // the status changed now
        restart: { key: `${T0}-1`, ageMs: 0 },
      }),
    );
    const finished = transition(restart.state, { type: 'restartFinished', outcome: 'succeeded' }, T0 + 45_000, config);
    expect(finished.effects).toContainEqual(
      expect.objectContaining({ type: 'writeProjection', restart: { key: `${T0}-1`, ageMs: 5_000 } }),
    );
  });

  it('a workflow started over writes above the one before it', () => {
    const before = apply(start(), { type: 'register', payload: registerPayload(ID) }, T0 + 1_000);
    let old = before;
    for (let i = 0; i < 50; i++)
      old = apply(
        old,
        { type: 'heartbeat', payload: heartbeatPayload(ID, { error_rate: i % 2 ? 0.9 : 0 }) },
        T0 + 2_000 + i,
      );
    const again = apply(
      initialState(ID, 'provisioning', T0 + 60_000),
      { type: 'register', payload: registerPayload(ID) },
      T0 + 61_000,
    );
    expect(again.livenessContract?.version).toBeGreaterThan(old.livenessContract?.version ?? Infinity);
  });
});
