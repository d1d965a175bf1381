import type * as activities from '../../activities/index.js';
import type { ReconcileRequest } from '../../workflows/reconcile.js';

/**
 * Mocked activities for workflow tests: records every reconcile pass that starts, and can
 * hold passes open so a test can send triggers while one is running.
 */
export class FakeActivities {
  readonly reconcileCalls: ReconcileRequest[] = [];
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

  get activities(): typeof activities {
    return {
      reconcilePlugins: async (request) => {
        this.reconcileCalls.push(request);
        await this.gate;
        return { workspaceId: request.workspaceId, declared: 0, installed: 0 };
      },
    };
  }
}
