/**
 * "Coalescing changes no verdict" (docs/heartbeats.md), as a property: random interleavings of
 * heartbeats (healthy, degrading, recovering, middling, wedged, with a card or not), registers,
 * operator restarts with their settle windows, dispatch failures, API crashes between the ledger's
 * statement and the signal (the runtime sends the heartbeat again), and a database clock off from
 * the workflow's, run twice over the pure state machine and the dead-detection evaluation in
 * simulated time: once forwarding every heartbeat, once through the ledger's one statement (the
 * LedgerModel, whose forward rule test/integration/heartbeat-ledger.test.ts checks against the
 * SQL function), with the workflow's own deadlines (its one timer) firing as they fall due. Both
 * give the same statuses, verdicts and restarts.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { defaultLifecycleConfig as config } from '../../workflows/config.js';
import { evaluate, type EvaluationContext } from '../../workflows/dead-detection.js';
import type { DispatchVerdict } from '../../workflows/definitions.js';
import { parseHeartbeat } from '../../workflows/payloads.js';
import {
  heartbeatFacts,
  initialState,
  nextDeadline,
  restartKey,
  transition,
  type Effect,
  type Event,
  type WorkspaceState,
} from '../../workflows/state-machine.js';
import { LedgerModel } from '../helpers/ledger-model.js';
import { heartbeatPayload, registerPayload } from '../helpers/payloads.js';

const ID = 'coalesced';
const T0 = Date.parse('2026-01-01T00:00:00.000Z');
/** The fleet liveness controller's period. */
const SWEEP_EVERY_MS = 5_000;
/** How long a reconcile pass and a box restart take. */
const RECONCILE_MS = 1_000;
const RESTART_MS = 2_000;
/** After the last step, long enough for every lease to expire and every restart to settle. */
const TAIL_MS = 2 * config.livenessTtlMs + 60_000;

type Health = 'healthy' | 'degrading' | 'recovering' | 'middling' | 'wedged';
type Probe = 'running' | 'not-running' | 'error';
type Step =
  | { type: 'heartbeat'; health: Health; card: boolean; crash: boolean }
  | { type: 'register' }
  | { type: 'restart' }
  | { type: 'dispatchFailed' };
interface Scenario {
  steps: { gapMs: number; step: Step }[];
  /** How far the database's clock runs ahead of the workflow's (negative: behind). */
  skewMs: number;
  /** What the box's successive probes answer, in turn. */
  probes: Probe[];
}

const errorRates: Record<Health, number> = {
  healthy: 0.01,
  degrading: 0.8,
  recovering: 0,
  middling: 0.3,
  wedged: 0,
};

function heartbeat(step: Extract<Step, { type: 'heartbeat' }>): unknown {
  return heartbeatPayload(ID, {
    error_rate: errorRates[step.health],
    ...(step.health === 'wedged' ? { runtime_state: 'wedged' } : {}),
    ...(step.card ? { agent_card: { name: 'coalesced agent' } } : {}),
  });
}

interface Outcome {
  statuses: string[];
  verdicts: string[];
  restarts: number;
}

/**
 * One workspace in simulated time: its workflow (the state machine, its effects and the
 * evaluation), the API in front of it, the heartbeat ledger on the database's clock, and the
 * fleet liveness controller's sweep. `forwardAll`: the API forwards every heartbeat (and records
 * it); otherwise it runs the ledger's one statement and forwards only the wanted ones.
 */
class Simulation {
  now = T0;
  state: WorkspaceState;
  readonly ledger = new LedgerModel();
  readonly outcome: Outcome = { statuses: [], verdicts: [], restarts: 0 };
  private timers: { at: number; seq: number; fire: () => void }[] = [];
  private waiters: { predicate: () => boolean; resolve: (held: boolean) => void }[] = [];
  private evaluations: Promise<unknown> = Promise.resolve();
  private probeCount = 0;
  private seq = 0;
  private nextSweep = T0 + SWEEP_EVERY_MS;

  constructor(
    private readonly scenario: Scenario,
    private readonly forwardAll: boolean,
  ) {
    this.state = initialState(ID, 'provisioning', T0);
    this.ledger.create(ID, this.databaseNow());
  }

  databaseNow(): number {
    return this.now + (this.forwardAll ? 0 : this.scenario.skewMs);
  }

  private at(at: number, fire: () => void): void {
    this.timers.push({ at, seq: this.seq++, fire });
    this.timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
  }

  apply(event: Event): void {
    const { state, effects } = transition(this.state, event, this.now, config);
    if (state.status !== this.state.status) this.outcome.statuses.push(state.status);
    this.state = state;
    for (const effect of effects) this.perform(effect);
    for (const waiter of [...this.waiters]) {
      if (!waiter.predicate()) continue;
      this.waiters.splice(this.waiters.indexOf(waiter), 1);
      waiter.resolve(true);
    }
  }

  private perform(effect: Effect): void {
    switch (effect.type) {
      case 'writeProjection': {
        const { status, url, statusSince, version, deliveryMode, contract, leaseAgeMs, restart } = effect;
        const publication = { status, url, statusSince, version, deliveryMode, contract, leaseAgeMs, restart };
        this.ledger.publish(ID, publication, this.databaseNow());
        return;
      }
      case 'startReconcile':
        return this.at(this.now + RECONCILE_MS, () => this.apply({ type: 'reconcileFinished', outcome: 'succeeded' }));
      case 'restartBox':
        this.outcome.restarts++;
        return this.at(this.now + RESTART_MS, () => this.apply({ type: 'restartFinished', outcome: 'succeeded' }));
      case 'evaluate':
        void this.evaluateSerially(effect.requester, false);
        return;
      case 'revokeTokens':
      case 'retire':
        return;
    }
  }

  private readonly evaluation: EvaluationContext = {
    config,
    state: () => this.state,
    apply: (event) => this.apply(event),
    now: () => this.now,
    readLedger: () => Promise.resolve(this.ledger.read(ID, restartKey(this.state), this.databaseNow())),
    waitFor: (predicate, timeoutMs) => {
      if (predicate()) return Promise.resolve(true);
      return new Promise((resolve) => {
        const waiter = { predicate, resolve };
        this.waiters.push(waiter);
        this.at(this.now + timeoutMs, () => {
          const index = this.waiters.indexOf(waiter);
          if (index < 0) return;
          this.waiters.splice(index, 1);
          resolve(false);
        });
      });
    },
    sleep: (ms) => new Promise((resolve) => this.at(this.now + ms, () => resolve())),
    isBoxRunning: () => {
      const probe = this.scenario.probes[this.probeCount++ % this.scenario.probes.length];
      return probe === 'error'
        ? Promise.reject(new Error('probe transport error'))
        : Promise.resolve(probe === 'running');
    },
    // The fleet's budget is the controller's, the same for both ways of forwarding.
    grantRemediation: () => Promise.resolve({ granted: true }),
  };

  private evaluateSerially(requester: string, budgeted: boolean): Promise<DispatchVerdict> {
    const run = this.evaluations.then(() => evaluate(this.evaluation, requester, budgeted));
    this.evaluations = run.catch(() => undefined);
    void run.then((verdict) => this.outcome.verdicts.push(`${requester}: ${verdict.verdict}`));
    return run;
  }

  /** A runtime's heartbeat through the API. `crash`: the API stops after its statement, before the signal. */
  private heartbeat(payload: unknown, crash: boolean): void {
    const parsed = parseHeartbeat(payload);
    if (!parsed.ok) throw new Error(parsed.reason);
    if (this.forwardAll) {
      const row = this.ledger.row(ID, this.databaseNow());
      row.lastSeenAt = this.databaseNow();
      row.beats++;
      if (!crash) this.apply({ type: 'heartbeat', payload });
      return;
    }
    const recorded = this.ledger.record(ID, heartbeatFacts(parsed.value), this.databaseNow());
    if (!recorded.wanted || crash) return;
    this.apply({ type: 'heartbeat', payload });
    this.ledger.delivered(ID, recorded.wantVersion, this.databaseNow());
  }

  private sweep(): void {
    const found = this.ledger.findExpired(1_000, this.databaseNow());
    for (const lease of found.leases)
      this.apply({ type: 'leaseExpired', version: lease.version, silentForMs: lease.silentForMs });
    this.ledger.markSignalled(found.leases);
  }

  /** Lets every evaluation run until it waits on simulated time again. */
  private static async settle(): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve));
  }

  /**
   * When the workflow's own timer fires (workspace.ts arms one at `nextDeadline`, at least 1 ms
   * ahead): the provisioning timeout, a settle window's end, a restart retry, a held restart's
   * backoff or drain, the resync.
   */
  private deadlineAt(): number {
    const deadline = nextDeadline(this.state, config);
    return deadline === null ? Infinity : Math.max(deadline, this.now + 1);
  }

  /** Fires every timer, sweep and workflow deadline due up to `until`, in time order. */
  private async runUntil(until: number): Promise<void> {
    for (;;) {
      const timer = this.timers[0];
      const deadlineAt = this.deadlineAt();
      const nextAt = Math.min(timer?.at ?? Infinity, this.nextSweep, deadlineAt);
      if (nextAt > until) break;
      this.now = Math.max(this.now, nextAt);
      if (timer !== undefined && timer.at === nextAt) {
        this.timers.shift();
        timer.fire();
      } else if (this.nextSweep === nextAt) {
        this.nextSweep += SWEEP_EVERY_MS;
        this.sweep();
      } else {
        this.apply({ type: 'deadline' });
      }
      await Simulation.settle();
    }
    this.now = until;
  }

  async run(): Promise<Outcome> {
    for (const { gapMs, step } of this.scenario.steps) {
      await this.runUntil(this.now + gapMs);
      switch (step.type) {
        case 'heartbeat': {
          const payload = heartbeat(step);
          this.heartbeat(payload, step.crash);
          // Not answered 200: the runtime sends it again.
          if (step.crash) this.heartbeat(payload, false);
          break;
        }
        case 'register':
          this.apply({ type: 'register', payload: registerPayload(ID) });
          break;
        case 'restart':
          this.apply({ type: 'restartRequested', reason: 'ops', requester: 'operator' });
          break;
        case 'dispatchFailed':
          void this.evaluateSerially('dispatch', true);
          break;
      }
      await Simulation.settle();
    }
    await this.runUntil(this.now + TAIL_MS);
    return this.outcome;
  }
}

const health = fc.constantFrom<Health>('healthy', 'degrading', 'recovering', 'middling', 'wedged');
const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({ type: fc.constant('heartbeat' as const), health, card: fc.boolean(), crash: fc.boolean() }),
  },
  { weight: 2, arbitrary: fc.constant({ type: 'register' as const }) },
  { weight: 1, arbitrary: fc.constant({ type: 'restart' as const }) },
  { weight: 2, arbitrary: fc.constant({ type: 'dispatchFailed' as const }) },
);
const gapMs = fc.oneof(
  fc.integer({ min: 0, max: 3_000 }),
  fc.integer({ min: 3_000, max: 40_000 }),
  fc.integer({ min: 100_000, max: 400_000 }),
);
const scenario: fc.Arbitrary<Scenario> = fc.record({
  steps: fc.array(fc.record({ gapMs, step }), { maxLength: 30 }),
  skewMs: fc.integer({ min: -120_000, max: 120_000 }),
  probes: fc.array(fc.constantFrom<Probe>('running', 'not-running', 'error'), { minLength: 1, maxLength: 6 }),
});

describe('coalescing changes no verdict', () => {
  it('through the ledger, every interleaving gives the statuses, verdicts and restarts of forwarding every heartbeat', async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        const everyHeartbeat = await new Simulation(s, true).run();
        const throughLedger = await new Simulation(s, false).run();
        expect(throughLedger).toEqual(everyHeartbeat);
      }),
      { numRuns: 300 },
    );
  });
});
