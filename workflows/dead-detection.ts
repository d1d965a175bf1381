/**
 * Dead-detection evaluation, in a fixed order of steps (numbered as in docs/restarts.md).
 * Entered by a caller that could not reach the box (the `dispatchFailed` Update) or by the
 * heartbeat watchdog. The decisions that change state (strikes, dead declaration) are events of
 * the pure state machine; this module only sequences the ledger reads, probes and waits, which
 * the caller provides: the workflow on durable timers and activities, the coalescing model in
 * its simulated time.
 */
import type { LedgerReading } from '../db/tables/heartbeat-ledger.js';
import type { LifecycleConfig } from './config.js';
import type { DispatchVerdict, RemediationGrant } from './definitions.js';
import {
  hasFreshHeartbeat,
  hasRecentHeartbeat,
  isSettling,
  registeredSinceRestart,
  strikeDeclaresDead,
  type Event,
  type ProbeResult,
  type WorkspaceState,
} from './state-machine.js';

export interface EvaluationContext {
  config: LifecycleConfig;
  state: () => WorkspaceState;
  apply: (event: Event) => void;
  /** The workflow's clock. */
  now: () => number;
  /** The heartbeat ledger now; null when it cannot be read. */
  readLedger: () => Promise<LedgerReading | null>;
  /** True once `predicate` holds, false once `timeoutMs` passed first. */
  waitFor: (predicate: () => boolean, timeoutMs: number) => Promise<boolean>;
  sleep: (ms: number) => Promise<void>;
  /** One look at the box: whether it runs; rejects on a transport error. */
  isBoxRunning: (requester: string) => Promise<boolean>;
  /** A token of the fleet's remediation budget for a dead verdict; null when the controller cannot be asked. */
  grantRemediation: (requester: string) => Promise<RemediationGrant | null>;
}

/** The answer while the ledger cannot be read: forwarded heartbeats alone never decide. */
export const NO_VERDICT_WITHOUT_LEDGER: DispatchVerdict = {
  verdict: 'queued',
  detail: 'heartbeat ledger unreachable: no verdict, retry later',
};

/** The answer while the fleet liveness controller cannot be asked for a token: nobody judges the fleet. */
export const NO_VERDICT_WITHOUT_CONTROLLER: DispatchVerdict = {
  verdict: 'queued',
  detail: 'the fleet liveness controller did not answer: no verdict, retry later',
};

/**
 * `budgeted`: a dead verdict takes a token of the fleet's remediation budget first (a caller's
 * report). Not for the watchdog's evaluation, whose lease expiry the controller already counted,
 * nor an operator's.
 */
export async function evaluate(ctx: EvaluationContext, requester: string, budgeted: boolean): Promise<DispatchVerdict> {
  const verdict = await decide(ctx, requester, budgeted);
  ctx.apply({ type: 'verdict', ...verdict, requester });
  return verdict;
}

async function decide(ctx: EvaluationContext, requester: string, budgeted: boolean): Promise<DispatchVerdict> {
  const { config } = ctx;
  // 0. An external runtime is not the service's to probe or restart: the caller handles its error.
  if (ctx.state().runtime === 'external') {
    return { verdict: 'alive', detail: 'the runtime is external: the service neither probes nor restarts it' };
  }
  // 1. A restart in flight: nothing to learn from probing a box that is being restarted.
  if (ctx.state().restart.inFlight) return { verdict: 'restarting', detail: 'a restart is in flight' };

  // 2. Settling after a restart; a recent heartbeat, forwarded (the workflow's clock) or recorded
  // (the ledger's age, the database's clock); while settling, wait briefly for a fresh one: the
  // new runtime's register and a heartbeat since the restart, forwarded or recorded.
  const ledger = await ctx.readLedger();
  if (ledger === null) return NO_VERDICT_WITHOUT_LEDGER;
  const now = ctx.now();
  const settling = isSettling(ctx.state(), now, config);
  const recent =
    hasRecentHeartbeat(ctx.state(), now, config) ||
    (ledger.lastSeenAgeMs !== null && ledger.lastSeenAgeMs <= config.recentHeartbeatMs);
  const freshBy = (reading: LedgerReading): boolean =>
    hasFreshHeartbeat(ctx.state()) || (registeredSinceRestart(ctx.state()) && reading.seenSinceRestart);
  let fresh = settling && freshBy(ledger);
  if (settling && !fresh) {
    fresh = await ctx.waitFor(() => hasFreshHeartbeat(ctx.state()), config.freshHeartbeatWaitMs);
    if (!fresh) {
      // The wait watches what is forwarded; the ledger has what was only recorded meanwhile.
      const again = await ctx.readLedger();
      if (again === null) return NO_VERDICT_WITHOUT_LEDGER;
      fresh = freshBy(again);
    }
  }

  // 3. Probe: an error means assume alive; running resets the strikes.
  let probe = await probeBox(ctx, requester);
  if (probe !== 'not-running') return alive(probe);

  // 4. A lone not-running is not trusted while there is reason to believe the box lives.
  if (recent || fresh || settling) {
    await ctx.sleep(config.reprobeDelayMs);
    probe = await probeBox(ctx, requester);
    if (probe !== 'not-running') return alive(probe);
  }

  // 5. The runtime beat recently, or since the restart: the caller's work waits, the box is not restarted.
  if (recent) {
    return { verdict: 'queued', detail: 'the box probes not running but its runtime beat recently: retry later' };
  }
  if (fresh) {
    return {
      verdict: 'queued',
      detail: 'settling after a restart and its runtime beat since: the box probes not running, retry later',
    };
  }

  // The fleet before the workspace: a dead verdict waits for a token of the fleet's budget, and
  // for the end of a disruption or a pause (docs/fleet-liveness.md §7). Refused: no verdict.
  const declares = !settling || strikeDeclaresDead(ctx.state(), ctx.now(), config);
  if (budgeted && declares) {
    const grant = await ctx.grantRemediation(requester);
    if (grant === null) return NO_VERDICT_WITHOUT_CONTROLLER;
    if (!grant.granted) return { verdict: 'queued', detail: `not running, but no verdict now: ${grant.reason}` };
    // An operator's restart may have started while the grant was asked.
    if (ctx.state().restart.inFlight) return { verdict: 'restarting', detail: 'a restart is in flight' };
  }

  // 6. Not settling, not running, no recent heartbeat: dead after one probe.
  if (!settling) {
    ctx.apply({ type: 'deadDeclared', reason: 'not running and no recent heartbeat', requester });
    return { verdict: 'dead', detail: 'not running and no recent heartbeat: restart triggered' };
  }

  // 7. Settling with no heartbeat: a strike; the machine declares dead at the threshold.
  const before = ctx.state().deadDetection.deadDeclarations;
  ctx.apply({ type: 'strike', requester });
  if (ctx.state().deadDetection.deadDeclarations > before) {
    return {
      verdict: 'dead',
      detail: `${config.strikeThreshold} strikes while settling: restart triggered`,
      strikes: config.strikeThreshold,
    };
  }
  const strikes = ctx.state().deadDetection.strikes?.count ?? 0;
  return {
    verdict: 'queued',
    detail: `settling after a restart: strike ${strikes}/${config.strikeThreshold}, retry later`,
    strikes,
  };
}

async function probeBox(ctx: EvaluationContext, requester: string): Promise<ProbeResult> {
  let result: ProbeResult;
  try {
    result = (await ctx.isBoxRunning(requester)) ? 'running' : 'not-running';
  } catch {
    result = 'error';
  }
  ctx.apply({ type: 'probed', result });
  return result;
}

function alive(probe: ProbeResult): DispatchVerdict {
  return probe === 'error'
    ? { verdict: 'alive', detail: 'the probe failed: assumed alive' }
    : { verdict: 'alive', detail: 'the box is running' };
}
