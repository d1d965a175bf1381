import type { Activities } from '../../activities/index.js';
import type { ReconcileRequest } from '../../workflows/reconcile.js';

/**
 * Mocked activities for workflow tests that are about when reconciles run, not what they do:
 * every pass starts with listPluginDiff, which records the pass and reports nothing missing.
 * Passes can be held open so a test can send triggers while one is running.
 */
export class FakeActivities {
  readonly reconcileCalls: ReconcileRequest[] = [];
  readonly restarts: string[] = [];
  readonly projections: { workspaceId: string; status: string; version: number }[] = [];
  private gate: Promise<void> | null = null;
  private openGate: (() => void) | null = null;

  /** Reconcile passes started from now on block until release(). */
  hold(): void {
    this.gate = new Promise((resolve) => (this.openGate = resolve));
  }

  release(): void {
    this.openGate?.();
    this.gate = null;
  }

  get activities(): Activities {
    const unexpected = (name: string) => (): never => {
      throw new Error(`${name} is not expected: no plugin is missing in these tests`);
    };
    return {
      listPluginDiff: async (request) => {
        this.reconcileCalls.push(request);
        await this.gate;
        return { declared: 0, missing: [] };
      },
      restartBox: ({ restartId }) => {
        this.restarts.push(restartId);
        return Promise.resolve('restarted');
      },
      writeProjection: ({ workspaceId, status, version }) => {
        this.projections.push({ workspaceId, status, version });
        return Promise.resolve();
      },
      probePlugin: unexpected('probePlugin'),
      stagePlugin: unexpected('stagePlugin'),
      deliverPlugin: unexpected('deliverPlugin'),
      recordInstalled: unexpected('recordInstalled'),
      reconcilePlugins: unexpected('reconcilePlugins'),
    };
  }
}
