/**
 * The state machine's liveness rules (workflows/state-machine/liveness.ts): register,
 * heartbeats, health, the liveness TTL and the provisioning timeout.
 */
import { describe, expect, it } from 'vitest';
import { defaultLifecycleConfig as config } from '../../workflows/config.js';
import {
  hasRecentHeartbeat,
  heartbeatSignature,
  lastHeartbeatAt,
  nextDeadline,
  statuses,
  transition,
  type Status,
  type WorkspaceState,
} from '../../workflows/state-machine.js';
import { parseHeartbeat, type HeartbeatPayload } from '../../workflows/payloads.js';
import { heartbeatPayload, registerPayload } from '../helpers/payloads.js';
import { apply, frozen, ID, iso, start, T0 } from '../helpers/state-machine.js';

const heartbeatSchemaParse = (payload: unknown): HeartbeatPayload => {
  const parsed = parseHeartbeat(payload);
  if (!parsed.ok) throw new Error(parsed.reason);
  return parsed.value;
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
        transitions: [{ from: 'failed', to: 'online', cause: 'heartbeat', at: iso(T0 + 800_000) }],
      },
    ]);
  });

  it.each<Status>(['failed', 'awaiting_agent', 'removed'])('no deadline applies while %s', (status) => {
    expect(nextDeadline({ ...start(), status }, config)).toBeNull();
  });

  it('a managed workspace keeps push as its default mode', () => {
    expect(apply(start(), { type: 'register', payload: registerPayload(ID) }, T0).deliveryMode).toBe('push');
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
