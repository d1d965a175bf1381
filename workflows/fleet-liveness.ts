/**
 * The fleet liveness controller (docs/fleet-liveness.md), one workflow for the fleet (id
 * `fleet-liveness`), after the Kubernetes node lifecycle controller: every `sweepEveryMs` it
 * finds the leases in the heartbeat ledger that expired on the database's clock, decides which to
 * signal (fleet-sweep.ts), and signals each of those workspaces `leaseExpired`; each workspace
 * applies its own rule. A sweep that fails (the database or Temporal unreachable) signals nobody:
 * no sweep, no verdict. Started idempotently by every worker; the run continues as new on its
 * event budget or when another build is current.
 */
import * as wf from '@temporalio/workflow';
import { sweepSignals, sweepStep } from './activities.js';
import {
  configureSignal,
  fleetLivenessStateQuery,
  grantRemediationUpdate,
  pauseRemediationUpdate,
  resumeRemediationUpdate,
  type FleetLivenessInput,
  type FleetLivenessState,
} from './definitions.js';
import {
  carriedFleetLivenessState,
  configuredSettings,
  fleetLivenessDetails,
  grantRemediation,
  initialFleetLivenessState,
  pauseRemediation,
  recordSweep,
  recordSweepFailure,
  resumeRemediation,
  sweepDecision,
} from './fleet-sweep.js';
import { failureMessage } from './reconcile.js';
import { continueAsNewOptions, newBuildIsCurrent } from './versioning.js';

/** A run continues as new past this many history events (a sweep writes about six). */
export const MAX_EVENTS_PER_RUN = 3_000;

const NOTHING_SIGNALLED = { signalled: 0, gone: 0, failed: 0 };

export async function fleetLivenessWorkflow(input: FleetLivenessInput = {}): Promise<void> {
  let state: FleetLivenessState = input.carried
    ? carriedFleetLivenessState(input.carried, input.settings ?? {})
    : initialFleetLivenessState(input.settings);
  wf.setHandler(configureSignal, (settings) => {
    state = { ...state, settings: configuredSettings(state.settings, settings) };
    wf.setCurrentDetails(fleetLivenessDetails(state));
  });
  wf.setHandler(
    pauseRemediationUpdate,
    (request) => {
      const paused = pauseRemediation(state, request, new Date(Date.now()).toISOString());
      state = paused.state;
      wf.setCurrentDetails(fleetLivenessDetails(state));
      return paused.answer;
    },
    { validator: validRemediationRequest },
  );
  wf.setHandler(
    resumeRemediationUpdate,
    () => {
      const resumed = resumeRemediation(state);
      state = resumed.state;
      wf.setCurrentDetails(fleetLivenessDetails(state));
      return resumed.answer;
    },
    { validator: validRemediationRequest },
  );
  wf.setHandler(
    grantRemediationUpdate,
    (request) => {
      const granted = grantRemediation(state, request);
      state = granted.state;
      wf.setCurrentDetails(fleetLivenessDetails(state));
      return granted.grant;
    },
    { validator: validGrantRequest },
  );
  wf.setHandler(fleetLivenessStateQuery, () => state);
  wf.setCurrentDetails(fleetLivenessDetails(state));

  const runEnds = (): boolean => {
    const info = wf.workflowInfo();
    return info.continueAsNewSuggested || info.historyLength >= MAX_EVENTS_PER_RUN || newBuildIsCurrent();
  };
  while (!runEnds()) {
    const at = new Date(Date.now()).toISOString();
    try {
      const found = await sweepStep.findExpiredLeases.executeWithOptions({ summary: 'find expired leases' }, [
        { limit: state.settings.batch, notBefore: state.notBefore },
      ]);
      const decided = sweepDecision(found, state);
      state = decided.state;
      const { signal, held } = decided;
      const told =
        signal.length === 0
          ? NOTHING_SIGNALLED
          : await sweepSignals.signalExpiredLeases.executeWithOptions(
              { summary: `signal ${signal.length} expired lease(s)` },
              [{ leases: signal }],
            );
      state = recordSweep(state, at, found, told, held);
    } catch (err) {
      state = recordSweepFailure(state, new Date(Date.now()).toISOString(), failureMessage(err));
    }
    wf.setCurrentDetails(fleetLivenessDetails(state));
    // Wakes early only to close the run (continue-as-new, a new current build).
    await wf.condition(runEnds, state.settings.sweepEveryMs);
  }
  await wf.condition(wf.allHandlersFinished);
  const continueAsNew = wf.makeContinueAsNewFunc<typeof fleetLivenessWorkflow>(continueAsNewOptions());
  await continueAsNew({ carried: { ...state, runs: state.runs + 1 } });
}

/** A field of a request sent to the controller: bounded text, not blank. */
function requireText(value: unknown, name: string): void {
  if (typeof value !== 'string' || value.trim() === '' || value.length > 500)
    throw new Error(`${name} must be text of 1 to 500 characters`);
}

/** An operator's pause or resume names who asks (and, to pause, why). */
function validRemediationRequest(request: { by: string; reason?: string }): void {
  requireText(request.by, 'by');
  if ('reason' in request) requireText(request.reason, 'reason');
}

/** A workspace's request names it and its requester, and carries a database time. */
function validGrantRequest(request: { workspaceId: string; requester: string; now: string }): void {
  requireText(request.workspaceId, 'workspaceId');
  requireText(request.requester, 'requester');
  if (typeof request.now !== 'string' || Number.isNaN(Date.parse(request.now)))
    throw new Error('now must be a time (ISO 8601)');
}
