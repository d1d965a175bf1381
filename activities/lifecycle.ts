/**
 * The lifecycle's effects outside the reconcile: restart the box and probe whether it runs (the
 * box driver), revoke a dead runtime's tokens, write the SQL projection with the liveness contract
 * and read the heartbeat ledger (the store). Each is
 * idempotent for its key: a restart for its restart id, a revocation and a projection version.
 * A restart also hands the box a new one-time boot credential (api/tokens.ts).
 */
import { log } from '@temporalio/activity';
import { hashSecret, newSecret } from '../db/secrets.js';
import type { LedgerReading } from '../db/tables/heartbeat-ledger.js';
import type { Publication } from '../db/tables/workspaces.js';
import type { RestartCause } from '../workflows/state-machine.js';
import { heartbeating } from './heartbeating.js';
import { LifecycleMetrics } from './metrics.js';
import type { ActivityDeps } from './reconcile.js';

export function createLifecycleActivities({
  store,
  driver,
  metrics = new LifecycleMetrics(),
}: Pick<ActivityDeps, 'store' | 'driver' | 'metrics'>) {
  return {
    /**
     * The SQL readers' view of the workspace and the liveness contract the API forwards by,
     * ordered by the workflow's count of projection writes, and its status changes into the
     * event outbox (counted once: a retry adds none).
     */
    async writeProjection(publication: Publication): Promise<void> {
      const added = await store.workspaces.writeProjection(publication);
      if (added > 0) for (const { from, to } of publication.transitions ?? []) metrics.transitioned(from, to);
    },

    /** The heartbeat ledger as dead detection reads it: the database's ages, on its clock. */
    async readHeartbeatLedger({
      workspaceId,
      restartKey,
    }: {
      workspaceId: string;
      restartKey: string;
    }): Promise<LedgerReading> {
      return store.heartbeats.reading(workspaceId, restartKey);
    },

    /** One probe for dead detection; an error is the caller's to interpret (assume alive). */
    async isBoxRunning({ workspaceId }: { workspaceId: string }): Promise<boolean> {
      return driver.isRunning(workspaceId);
    },

    /**
     * Revokes the workspace's tokens minted before `mintedBefore` (all of them without it). Only a
     * dead verdict revokes up to a moment (the verdict's), so that is where dead verdicts are counted.
     */
    async revokeInstanceTokens({
      workspaceId,
      mintedBefore,
    }: {
      workspaceId: string;
      mintedBefore?: string;
    }): Promise<number> {
      const revoked = await store.tokens.revoke(workspaceId, mintedBefore);
      log.info('revoked instance tokens', { workspaceId, mintedBefore, revoked });
      if (mintedBefore !== undefined) metrics.declaredDead();
      return revoked;
    },

    /** The workspace is removed: its box's runtime stops for good. */
    async stopBox({ workspaceId }: { workspaceId: string }): Promise<string> {
      const result = await heartbeating(() => driver.stop(workspaceId));
      log.info('stop box', { workspaceId, result });
      return result;
    },

    /** `cause` (absent from runs of an earlier build): why it was asked, counted by it once done. */
    async restartBox({
      workspaceId,
      restartId,
      cause = 'requested',
    }: {
      workspaceId: string;
      restartId: string;
      cause?: RestartCause;
    }): Promise<string> {
      // Written into the box, then stored, then restarted. The box first: a box that cannot be
      // reached keeps the credential it holds valid (nothing new is stored). A crash between the
      // write and the store leaves the two disagreeing until the retry writes and stores another;
      // a runtime still trying to register reads the file afresh each time. The whole attempt
      // heartbeats, so a slow box never has a timed-out attempt write behind its retry.
      const result = await heartbeating(async () => {
        const credential = newSecret();
        await driver.writeBootCredential(workspaceId, credential);
        await store.bootCredentials.set(workspaceId, hashSecret(credential));
        return driver.restart(workspaceId, restartId);
      });
      log.info('restart box', { workspaceId, restartId, cause, result });
      metrics.restarted(cause);
      return result;
    },
  };
}
