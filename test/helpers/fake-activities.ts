import type { Client, WorkflowHandle } from '@temporalio/client';
import type { Activities } from '../../activities/index.js';
import {
  FLEET_LIVENESS_WORKFLOW_ID,
  grantRemediationUpdate,
  heartbeatSignal,
  leaseExpiredSignal,
  workspaceWorkflowId,
} from '../../workflows/definitions.js';
import { parseHeartbeat } from '../../workflows/payloads.js';
import type { ReconcilePass } from '../../workflows/reconcile.js';
import { heartbeatFacts } from '../../workflows/state-machine.js';
import { LedgerModel } from './ledger-model.js';

export interface FakeActivitiesOptions {
  /** The clock the fake database's times follow (the test server's, in time-skipping tests). */
  clock?: () => Promise<number>;
  /** What the fleet liveness controller's fake sweep signals workspaces with. */
  client?: Client;
}

/**
 * Mocked activities for workflow tests that are about when reconciles run, not what they do:
 * every pass starts with listPluginDiff, which records the pass and reports nothing missing.
 * Passes can be held open so a test can send triggers while one is running. The heartbeat
 * ledger is a LedgerModel on the database's clock (the test server's plus
 * `databaseClockOffsetMs`); `heartbeat` does what the API does with a runtime's heartbeat.
 */
export class FakeActivities {
  /** The heartbeat ledger, its times on the database's clock. */
  readonly ledger = new LedgerModel();
  /** How far the fake database's clock runs ahead of the test server's (negative: behind). */
  databaseClockOffsetMs = 0;
  /** The database cannot be reached: the ledger's reads, writes and sweeps fail. */
  databaseDown = false;
  /** When an API process last served (api_serving), on the database's clock; null: none ever did. */
  apiServedAt: number | null = null;
  constructor(private readonly options: FakeActivitiesOptions = {}) {}
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
  readonly projections: { workspaceId: string; status: string; version: number; want: string }[] = [];
  readonly ledgerReads: string[] = [];
  /** The workspaces whose dead detection asked for a token of the fleet's remediation budget. */
  readonly grantRequests: string[] = [];
  /** Whether dead detection's grant is asked of the fleet liveness controller (with the client); granted at once otherwise. */
  askController = false;
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

  /** The fake database's now. */
  async databaseNow(): Promise<number> {
    return (await (this.options.clock ?? (() => Promise.resolve(Date.now())))()) + this.databaseClockOffsetMs;
  }

  private reachDatabase(): void {
    if (this.databaseDown) throw new Error('connect ECONNREFUSED 127.0.0.1:5432');
  }

  /**
   * A runtime's heartbeat as the API handles it: recorded in the ledger, or, when the published
   * contract wants it, signalled to the workflow and recorded once it has it. True when forwarded.
   */
  async heartbeat(handle: WorkflowHandle, payload: unknown): Promise<boolean> {
    const parsed = parseHeartbeat(payload);
    if (!parsed.ok) throw new Error(parsed.reason);
    const id = parsed.value.workspace_id;
    this.reachDatabase();
    const recorded = this.ledger.record(id, heartbeatFacts(parsed.value), await this.databaseNow());
    if (!recorded.wanted) return false;
    await handle.signal(heartbeatSignal, payload);
    this.ledger.delivered(id, recorded.wantVersion, await this.databaseNow());
    return true;
  }

  /** A heartbeat in the ledger that was not forwarded (decided against a contract the workflow has since replaced). */
  async recordedOnly(workspaceId: string): Promise<void> {
    const row = this.ledger.row(workspaceId, await this.databaseNow());
    row.lastSeenAt = await this.databaseNow();
    row.beats++;
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
      writeProjection: async ({ workspaceId, ...publication }) => {
        this.reachDatabase();
        this.projections.push({
          workspaceId,
          status: publication.status,
          version: publication.version,
          want: publication.contract.want,
        });
        this.ledger.publish(workspaceId, publication, await this.databaseNow());
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
      readHeartbeatLedger: async ({ workspaceId, restartKey }) => {
        this.ledgerReads.push(workspaceId);
        this.reachDatabase();
        return this.ledger.read(workspaceId, restartKey, await this.databaseNow());
      },
      findExpiredLeases: async ({ limit, notBefore }) => {
        this.reachDatabase();
        const since = notBefore === undefined || notBefore === null ? null : Date.parse(notBefore);
        const now = await this.databaseNow();
        const found = this.ledger.findExpired(limit, now, since);
        return { ...found, servedAgeMs: this.apiServedAt === null ? null : now - this.apiServedAt };
      },
      grantRemediation: async ({ workspaceId, requester }) => {
        this.grantRequests.push(workspaceId);
        const client = this.options.client;
        if (!this.askController || client === undefined) return { granted: true };
        const now = new Date(await this.databaseNow()).toISOString();
        return client.workflow
          .getHandle(FLEET_LIVENESS_WORKFLOW_ID)
          .executeUpdate(grantRemediationUpdate, { args: [{ workspaceId, requester, now }] });
      },
      signalExpiredLeases: async ({ leases }) => {
        const client = this.options.client;
        if (client === undefined) throw new Error('FakeActivities was created without a client to signal with');
        for (const { workspaceId, version, silentForMs } of leases)
          await client.workflow.getHandle(workspaceWorkflowId(workspaceId)).signal(leaseExpiredSignal, {
            version,
            silentForMs,
          });
        this.ledger.markSignalled(leases);
        return { signalled: leases.length, gone: 0, failed: 0 };
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
