/**
 * One long-running workflow per workspace (id `workspace:<workspaceId>`). It owns the
 * workspace's state: signals feed events to the pure state machine (state-machine.ts), and the
 * workflow runs the effects the machine asks for (a reconcile pass, a box restart, the
 * projection write). Durable timers watch the deadlines (liveness TTL, provisioning timeout). A
 * forwarded heartbeat costs one signal: no activity, no timer; the API forwards only the
 * heartbeats the workflow's published liveness contract wants, and the fleet liveness controller
 * tells it when its lease expired (docs/fleet-liveness.md). The run continues as new when it is
 * full or another build is current (docs/versioning.md).
 */
import * as wf from '@temporalio/workflow';
import { resolveConfig } from './config.js';
import type { LedgerReading } from '../db/tables/heartbeat-ledger.js';
import { evaluate, type EvaluationContext } from './dead-detection.js';
import {
  cordonUpdate,
  declarePluginsSignal,
  deprovisionSignal,
  dispatchFailedUpdate,
  leaseExpiredSignal,
  reconcileSignal,
  reconcileUpdate,
  heartbeatSignal,
  registerSignal,
  restartSignal,
  restartUpdate,
  stateQuery,
  uncordonUpdate,
  type DispatchFailure,
  type DispatchVerdict,
  type ReconcileRequest,
  type RestartRequest,
  type WorkspaceWorkflowInput,
} from './definitions.js';
import { failureMessage, runReconcile } from './reconcile.js';
import { currentDetails, markdownLiteral, searchAttributePairs, searchAttributeValues } from './operator-view.js';
import { bookkeeping, boxControl, boxProbe, ledger, localStep, remediationBudget } from './activities.js';
import { continueAsNewOptions, newBuildIsCurrent } from './versioning.js';
import {
  initialState,
  nextDeadline,
  restartKey,
  restartNeeded,
  transition,
  upgradeState,
  type CommandAnswer,
  type Effect,
  type Event,
  type ReconcileOutcome,
  type WorkspaceState,
} from './state-machine.js';

const { restartBox, stopBox } = boxControl;
const { isBoxRunning } = boxProbe;
const { revokeInstanceTokens } = bookkeeping;

/** How long the workflow waits before writing again a projection whose write failed (after its own retries). */
const PUBLICATION_RETRY_MS = 5_000;
type Publication = Omit<Extract<Effect, { type: 'writeProjection' }>, 'type'>;

export async function workspaceWorkflow(input: WorkspaceWorkflowInput): Promise<WorkspaceState> {
  const config = resolveConfig(input.config);
  const { workspaceId } = input;
  let state: WorkspaceState = input.carried
    ? upgradeState(input.carried, input.initialStatus)
    : initialState(workspaceId, input.initialStatus ?? 'provisioning', Date.now());
  let signalsThisRun = 0;
  // A dead verdict's revocation finishes before its restart starts, and revokes only the tokens
  // minted before the verdict: the restarted runtime's new token is never revoked.
  let revocation: Promise<unknown> = Promise.resolve();

  /** Feeds one event to the machine and runs its effects; an operator command's answer. */
  function step(event: Event): CommandAnswer | undefined {
    const result = transition(state, event, Date.now(), config);
    state = result.state;
    result.effects.forEach(perform);
    showState();
    return result.answer;
  }
  function apply(event: Event): void {
    step(event);
  }

  // What the Web UI shows. Search attributes are upserted only when their values differ from
  // the execution's (set at start, carried across continue-as-new): a heartbeat changes neither,
  // so it stays one signal event. Current details cost no command.
  function showState(): void {
    wf.setCurrentDetails(currentDetails(state));
    const pairs = searchAttributePairs(searchAttributeValues(state));
    const current = wf.workflowInfo().typedSearchAttributes;
    if (pairs.every((pair) => current.get(pair.key) === pair.value)) return;
    wf.upsertSearchAttributes(pairs);
  }

  // Fire-and-forget effects still running; the run does not close (complete or continue as
  // new) before they finish, so e.g. the final `removed` projection write is never abandoned.
  let effectsPending = 0;
  function track(work: Promise<unknown>): void {
    effectsPending++;
    void work.finally(() => effectsPending--);
  }

  // The projection, the liveness contract and the status changes, written one at a time until
  // each lands: the API forwards heartbeats by the contract in the ledger. A publication not yet
  // written is replaced by the next one, which carries the status changes of both, so each change
  // reaches the event outbox once; one being written is never merged: if its write fails it is
  // written again as it was (idempotent by its version), then the next.
  let unpublished: Publication | null = null;
  let publishing = false;
  function publish(publication: Publication): void {
    unpublished =
      unpublished === null
        ? publication
        : { ...publication, transitions: [...unpublished.transitions, ...publication.transitions] };
    if (publishing) return;
    publishing = true;
    track(
      writeUnpublished().finally(() => {
        publishing = false;
      }),
    );
  }
  async function writeUnpublished(): Promise<void> {
    let publication: Publication | null = null;
    for (;;) {
      if (publication === null) {
        publication = unpublished;
        unpublished = null;
      }
      if (publication === null) return;
      try {
        await localStep.writeProjection.executeWithOptions(
          {
            summary: `projection: ${publication.status}, wants ${publication.contract.want} (v${publication.version})`,
          },
          [{ workspaceId, ...publication }],
        );
        publication = null;
      } catch (err) {
        wf.log.warn('projection write failed; writing it again shortly', { error: failureMessage(err) });
        await wf.sleep(PUBLICATION_RETRY_MS);
      }
    }
  }

  function perform(effect: Effect): void {
    // Effects run beside the signal loop; each completion is fed back as an event, so the
    // machine decides what follows (a coalesced follow-up pass, a restart, a second restart).
    switch (effect.type) {
      case 'startReconcile':
        void runReconcile(
          {
            workspaceId,
            trigger: effect.trigger,
            mode: effect.mode,
            ...(effect.holdRepairs ? { holdRepairs: effect.holdRepairs } : {}),
          },
          (plan) => apply({ type: 'reconcilePlanned', plan }),
        ).then(
          async (pass) => {
            // A restart drains the runtime's work: what its latest heartbeat says, from the ledger.
            const reading = restartNeeded(pass) ? await readLedger() : null;
            const report = reading === null ? pass : { ...pass, activeTasks: reading.activeTasks };
            const failed = report.outcomes.flatMap((o) => (o.status === 'failed' ? [`${o.name}: ${o.error}`] : []));
            if (report.verifyError !== undefined) failed.push(report.verifyError);
            const outcome: ReconcileOutcome = failed.length === 0 ? 'succeeded' : 'failed';
            apply({
              type: 'reconcileFinished',
              outcome,
              report,
              ...(failed.length > 0 ? { error: failed.join('; ') } : {}),
            });
          },
          (err: unknown) => apply({ type: 'reconcileFinished', outcome: 'failed', error: failureMessage(err) }),
        );
        break;
      case 'writeProjection': {
        const { status, url, statusSince, version, deliveryMode, contract, leaseAgeMs, restart, transitions, holds } =
          effect;
        publish({ status, url, statusSince, version, deliveryMode, contract, leaseAgeMs, restart, transitions, holds });
        break;
      }
      case 'revokeTokens': {
        const work = revokeInstanceTokens
          .executeWithOptions({ summary: 'revoke instance tokens: declared dead' }, [
            { workspaceId, mintedBefore: effect.mintedBefore },
          ])
          .catch((err: unknown) => wf.log.error('revoking instance tokens failed', { error: failureMessage(err) }));
        revocation = work;
        track(work);
        break;
      }
      case 'retire':
        track(retire());
        break;
      case 'evaluate':
        void evaluateSerially(effect.requester, false);
        break;
      case 'restartBox': {
        // The machine numbers restarts per workspace; a run started over (terminate, reset)
        // counts from 1 again, and a box driver skips a restart id it already did. A random
        // suffix (deterministic on replay) makes every restart's id its own.
        const restartId = `${effect.restartId}-${wf.uuid4().slice(0, 8)}`;
        const restart = (): Promise<void> =>
          // Removed while it waited for the revocation: the box is being stopped, not restarted.
          state.status === 'removed'
            ? Promise.resolve(apply({ type: 'restartFinished', outcome: 'failed', error: 'workspace removed' }))
            : restartBox
                // The reason may quote a failed restart's output (a box's text): the UI renders summaries.
                .executeWithOptions({ summary: `restart box (${restartId}): ${markdownLiteral(effect.reason)}` }, [
                  { workspaceId, restartId, cause: effect.cause },
                ])
                .then(
                  () => apply({ type: 'restartFinished', outcome: 'succeeded' }),
                  (err: unknown) => apply({ type: 'restartFinished', outcome: 'failed', error: failureMessage(err) }),
                );
        // The revocation in flight (if any) first: it ends with a log, never a rejection.
        void revocation.then(restart);
        break;
      }
    }
  }

  /**
   * A removed workspace's tokens are revoked and its box stopped, each whatever became of the
   * other; the stop waits for a restart in flight, so no runtime is started after it.
   */
  async function retire(): Promise<void> {
    const logFailure = (what: string) => (err: unknown) =>
      wf.log.error(`${what} of the removed workspace failed`, { error: failureMessage(err) });
    await revokeInstanceTokens
      .executeWithOptions({ summary: 'revoke instance tokens: removed' }, [{ workspaceId }])
      .catch(logFailure('revoking the tokens'));
    await wf.condition(() => !state.restart.inFlight);
    await stopBox
      .executeWithOptions({ summary: 'stop box: removed' }, [{ workspaceId }])
      .catch(logFailure('stopping the box'));
  }

  /** Every signal counts toward this run's budget, then feeds the machine. */
  function onSignal(event: Event): void {
    signalsThisRun++;
    apply(event);
  }
  wf.setHandler(registerSignal, (payload) => onSignal({ type: 'register', payload }));
  wf.setHandler(heartbeatSignal, (payload) => onSignal({ type: 'heartbeat', payload }));
  wf.setHandler(leaseExpiredSignal, ({ version, silentForMs }) =>
    onSignal({ type: 'leaseExpired', version, silentForMs }),
  );
  wf.setHandler(deprovisionSignal, () => onSignal({ type: 'deprovision' }));
  wf.setHandler(declarePluginsSignal, () => onSignal({ type: 'pluginsDeclared' }));
  // An operator's restart and reconcile arrive as signals (they answer nothing) or as Updates.
  const restartRequested = (request: RestartRequest | undefined): Event => ({
    type: 'restartRequested',
    reason: request?.reason ?? 'operator request',
    requester: request?.requester ?? 'operator',
  });
  const reconcileRequested = (request: ReconcileRequest | undefined): Event => ({
    type: 'reconcileRequested',
    mode: request?.refresh === true ? 'refresh' : 'verify',
    requester: request?.requester ?? 'operator',
  });
  wf.setHandler(restartSignal, (request) => onSignal(restartRequested(request)));
  wf.setHandler(reconcileSignal, (request) => onSignal(reconcileRequested(request)));
  // Operator commands as Updates: each answers what it did (started, merged, refused and why).
  function onCommand(event: Event): CommandAnswer {
    signalsThisRun++;
    return step(event) ?? { outcome: 'refused', detail: 'the workflow has no answer for this command' };
  }
  wf.setHandler(restartUpdate, (request) => onCommand(restartRequested(request)));
  wf.setHandler(reconcileUpdate, (request) => onCommand(reconcileRequested(request)));
  wf.setHandler(cordonUpdate, (request) =>
    onCommand({
      type: 'cordon',
      reason: request.reason ?? 'operator hold',
      requester: request.requester ?? 'operator',
    }),
  );
  wf.setHandler(uncordonUpdate, (request) =>
    onCommand({ type: 'uncordon', requester: request.requester ?? 'operator' }),
  );
  wf.setHandler(stateQuery, () => state);
  showState();

  /** The heartbeat ledger, read by the database (ages on its clock); null when it cannot be read. */
  async function readLedger(): Promise<LedgerReading | null> {
    try {
      return await ledger.readHeartbeatLedger.executeWithOptions({ summary: 'heartbeat ledger: last seen' }, [
        { workspaceId, restartKey: restartKey(state) },
      ]);
    } catch (err) {
      const error = failureMessage(err);
      wf.log.warn('reading the heartbeat ledger failed: no verdict; a restart drains what the workflow knows', {
        error,
      });
      return null;
    }
  }

  // Evaluations run one at a time: in a burst, the first may declare dead and restart; the
  // rest see the restart in flight (or the settling box) instead of restarting it again.
  const evaluation: EvaluationContext = {
    config,
    state: () => state,
    apply,
    now: () => Date.now(),
    readLedger,
    waitFor: (predicate, timeoutMs) => wf.condition(predicate, timeoutMs),
    sleep: (ms) => wf.sleep(ms),
    isBoxRunning: (requester) =>
      isBoxRunning.executeWithOptions({ summary: `probe box: is it running? (for ${requester})` }, [{ workspaceId }]),
    grantRemediation: async (requester) => {
      try {
        return await remediationBudget.grantRemediation.executeWithOptions(
          { summary: `fleet remediation budget: a dead verdict (for ${requester})` },
          [{ workspaceId, requester }],
        );
      } catch (err) {
        wf.log.warn('asking the fleet liveness controller for a dead verdict failed: no verdict', {
          error: failureMessage(err),
        });
        return null;
      }
    },
  };
  let evaluationQueue: Promise<unknown> = Promise.resolve();
  let evaluationsPending = 0;
  function evaluateSerially(requester: string, budgeted: boolean): Promise<DispatchVerdict> {
    evaluationsPending++;
    const run = evaluationQueue.then(() => evaluate(evaluation, requester, budgeted));
    evaluationQueue = run.finally(() => evaluationsPending--).catch(() => undefined);
    return run;
  }
  wf.setHandler(
    dispatchFailedUpdate,
    (failure: DispatchFailure) => evaluateSerially(failure.caller ?? 'dispatch', failure.operator !== true),
    {
      validator: (_failure: DispatchFailure) => {
        if (state.status === 'removed') throw new Error('workspace is removed');
      },
    },
  );

  const removed = (): boolean => state.status === 'removed';
  const runIsFull = (): boolean => {
    const info = wf.workflowInfo();
    return (
      info.continueAsNewSuggested ||
      info.historyLength >= config.maxEventsPerRun ||
      signalsThisRun >= config.maxSignalsPerRun
    );
  };
  const runEnds = (): boolean => removed() || runIsFull() || newBuildIsCurrent();

  // Deadline loop: one timer armed at the earliest deadline (provisioning timeout, a settle
  // window's end, a restart retry, the resync). Silence is the fleet liveness controller's: a
  // healthy workspace arms no timer and its heartbeats never wake this loop.
  while (!runEnds()) {
    const armedAt = nextDeadline(state, config);
    const earlierDeadline = (): boolean => {
      const next = nextDeadline(state, config);
      return next !== null && (armedAt === null || next < armedAt);
    };
    const woke = (): boolean => runEnds() || earlierDeadline();
    if (armedAt === null) {
      await wf.condition(woke);
    } else if (!(await wf.condition(woke, Math.max(1, armedAt - Date.now())))) {
      apply({ type: 'deadline' });
    }
  }

  // Let signal handlers and in-flight operations finish so nothing is lost at the boundary.
  await wf.condition(
    () =>
      wf.allHandlersFinished() &&
      !state.reconcile.running &&
      !state.restart.inFlight &&
      evaluationsPending === 0 &&
      effectsPending === 0,
  );
  if (removed()) return state;

  const carried: WorkspaceState = { ...state, counters: { ...state.counters, runs: state.counters.runs + 1 } };
  const continueAsNew = wf.makeContinueAsNewFunc<typeof workspaceWorkflow>(continueAsNewOptions());
  return await continueAsNew({ ...input, config, carried });
}
