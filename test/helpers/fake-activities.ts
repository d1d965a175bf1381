import type { Activities } from '../../activities/index.js';
import type { ReconcilePass } from '../../workflows/reconcile.js';

/**
 * Mocked activities for workflow tests that are about when reconciles run, not what they do:
 * every pass starts with listPluginDiff, which records the pass and reports nothing missing.
 * Passes can be held open so a test can send triggers while one is running.
 */
export class FakeActivities {
  readonly reconcileCalls: Pick<ReconcilePass, 'workspaceId' | 'trigger'>[] = [];
  readonly restarts: string[] = [];
  readonly probes: string[] = [];
  readonly revocations: string[] = [];
  readonly stops: string[] = [];
  /** Every revocation with its arguments, as asked (before it completes). */
  readonly revocationRequests: { workspaceId: string; mintedBefore?: string }[] = [];
  private revocationGate: Promise<void> | null = null;
  private openRevocationGate: (() => void) | null = null;
  /** Per workspace, what successive isBoxRunning probes answer; `running` once exhausted. */
  readonly probeScript = new Map<string, ('running' | 'not-running' | 'error')[]>();
  readonly projections: { workspaceId: string; status: string; version: number }[] = [];
  /** Per workspace, the heartbeat ledger's last-seen time (heartbeats an API coalesced); none by default. */
  readonly ledger = new Map<string, string>();
  readonly ledgerReads: string[] = [];
  private gate: Promise<void> | null = null;
  private restartGate: Promise<void> | null = null;
  private openRestartGate: (() => void) | null = null;
  private openGate: (() => void) | null = null;

  /** Reconcile passes started from now on block until release(). */
  hold(): void {
    this.gate = new Promise((resolve) => (this.openGate = resolve));
  }

  release(): void {
    this.openGate?.();
    this.gate = null;
  }

  /** Box restarts started from now on block until releaseRestarts(). */
  holdRestarts(): void {
    this.restartGate = new Promise((resolve) => (this.openRestartGate = resolve));
  }

  releaseRestarts(): void {
    this.openRestartGate?.();
    this.restartGate = null;
  }

  /** Token revocations started from now on block until releaseRevocations(). */
  holdRevocations(): void {
    this.revocationGate = new Promise((resolve) => (this.openRevocationGate = resolve));
  }

  releaseRevocations(): void {
    this.openRevocationGate?.();
    this.revocationGate = null;
  }

  get activities(): Activities {
    const unexpected = (name: string) => (): never => {
      throw new Error(`${name} is not expected: no plugin is missing in these tests`);
    };
    return {
      listPluginDiff: async (request) => {
        this.reconcileCalls.push(request);
        await this.gate;
        return { declared: 0, declaredNames: [], missing: [], tracked: [], undeclared: [] };
      },
      restartBox: async ({ workspaceId, restartId }) => {
        this.restarts.push(`${workspaceId}/${restartId}`);
        await this.restartGate;
        return 'restarted';
      },
      writeProjection: ({ workspaceId, status, version }) => {
        this.projections.push({ workspaceId, status, version });
        return Promise.resolve();
      },
      isBoxRunning: ({ workspaceId }) => {
        this.probes.push(workspaceId);
        const next = this.probeScript.get(workspaceId)?.shift() ?? 'running';
        return next === 'error'
          ? Promise.reject(new Error('probe transport error'))
          : Promise.resolve(next === 'running');
      },
      stopBox: ({ workspaceId }) => {
        this.stops.push(workspaceId);
        return Promise.resolve('stopped');
      },
      revokeInstanceTokens: async (request) => {
        this.revocationRequests.push(request);
        await this.revocationGate;
        this.revocations.push(request.workspaceId);
        return 1;
      },
      readHeartbeatLedger: ({ workspaceId }) => {
        this.ledgerReads.push(workspaceId);
        return Promise.resolve({ lastSeenAt: this.ledger.get(workspaceId) ?? null });
      },
      probePlugin: unexpected('probePlugin'),
      stagePlugin: unexpected('stagePlugin'),
      deliverPlugin: unexpected('deliverPlugin'),
      recordInstalled: unexpected('recordInstalled'),
      listBoxPlugins: unexpected('listBoxPlugins'),
      removePlugin: unexpected('removePlugin'),
      deleteTrackingRow: unexpected('deleteTrackingRow'),
    };
  }
}
