/**
 * The fleet liveness controller's sweep (workflows/fleet-liveness.ts): find the leases that
 * expired on the database's clock, and tell each of those workspaces. Both idempotent: a lease is
 * marked signalled for its contract only once its workspace was told, so a retried sweep signals
 * at most again what was not marked, and a workspace ignores a repeated or stale expiry.
 */
import { ApplicationFailure, log } from '@temporalio/activity';
import { WorkflowNotFoundError } from '@temporalio/client';
import type { ExpiredLease, ExpiredLeases } from '../db/tables/heartbeat-ledger.js';
import {
  FLEET_LIVENESS_WORKFLOW_ID,
  grantRemediationUpdate,
  leaseExpiredSignal,
  workspaceWorkflowId,
  type RemediationGrant,
} from '../workflows/definitions.js';
import { heartbeating } from './heartbeating.js';
import type { ActivityDeps } from './reconcile.js';

/** Workspaces signalled at once by one sweep. */
export const SIGNAL_CONCURRENCY = 16;

export interface SignalledLeases {
  /** Told, and marked. */
  signalled: number;
  /** No workflow runs for the workspace (removed, or terminated): marked, nobody to tell. */
  gone: number;
  /** Not told (Temporal refused or did not answer): the next sweep finds them again. */
  failed: number;
}

export function createFleetLivenessActivities({ store, temporal }: Pick<ActivityDeps, 'store' | 'temporal'>) {
  const client = () => {
    if (temporal === undefined)
      throw ApplicationFailure.nonRetryable(
        'this worker was created without a Temporal client, so it cannot reach workflows: create it with createWorker',
        'NoTemporalClient',
      );
    return temporal;
  };
  return {
    /**
     * The watched leases, and up to `limit` expired ones not yet signalled for their contract,
     * each silent from `notBefore` at the earliest (the database's time the last disruption ended).
     */
    async findExpiredLeases({
      limit,
      notBefore,
    }: {
      limit: number;
      notBefore?: string | null;
    }): Promise<ExpiredLeases> {
      return store.heartbeats.findExpired(limit, notBefore ?? null);
    },

    /** Tells each workspace its lease expired, a few at once, and marks the ones told. */
    async signalExpiredLeases({ leases }: { leases: ExpiredLease[] }): Promise<SignalledLeases> {
      const temporal = client();
      const result: SignalledLeases = { signalled: 0, gone: 0, failed: 0 };
      const marked: ExpiredLease[] = [];
      const queue = [...leases];
      const signalNext = async (): Promise<void> => {
        for (let lease = queue.shift(); lease !== undefined; lease = queue.shift()) {
          const { workspaceId, version, silentForMs } = lease;
          try {
            await temporal.workflow
              .getHandle(workspaceWorkflowId(workspaceId))
              .signal(leaseExpiredSignal, { version, silentForMs });
            result.signalled++;
            marked.push(lease);
          } catch (err) {
            if (err instanceof WorkflowNotFoundError) {
              result.gone++;
              marked.push(lease);
            } else {
              result.failed++;
              log.warn('signalling an expired lease failed; the next sweep tries again', {
                workspaceId,
                error: err instanceof Error ? err.message : String(err),
              });
            }
          }
        }
      };
      await heartbeating(async () => {
        await Promise.all(Array.from({ length: Math.min(SIGNAL_CONCURRENCY, leases.length) }, signalNext));
        await store.heartbeats.markSignalled(marked);
      });
      return result;
    },

    /**
     * Asks the fleet liveness controller for one token of the remediation budget, on the
     * database's clock, before a workspace declares a caller's dead verdict. No controller running
     * is a refusal: without it nobody judges the fleet, and a verdict waits for it.
     */
    async grantRemediation({
      workspaceId,
      requester,
    }: {
      workspaceId: string;
      requester: string;
    }): Promise<RemediationGrant> {
      const temporal = client();
      const now = await store.now();
      try {
        return await temporal.workflow
          .getHandle(FLEET_LIVENESS_WORKFLOW_ID)
          .executeUpdate(grantRemediationUpdate, { args: [{ workspaceId, requester, now }] });
      } catch (err) {
        if (err instanceof WorkflowNotFoundError)
          return { granted: false, reason: 'the fleet liveness controller is not running: start a worker' };
        throw err;
      }
    },
  };
}
