/**
 * The heartbeat ledger modelled in TypeScript: each row and the statements that change it
 * (Store.writeProjection's contract, recordHeartbeat, heartbeatDelivered, readLedger,
 * findExpiredLeases, markLeasesSignalled), with every time on the clock the caller passes as
 * `now` (the database's). The forward rule is the state machine's heartbeatWanted, which
 * test/unit/heartbeat-ledger.test.ts checks against the SQL function. What the workflow tests'
 * fake activities and the coalescing property test run against.
 */
import type { ExpiredLeases, HeartbeatRecord, LedgerReading } from '../../db/tables/heartbeat-ledger.js';
import type { Publication } from '../../db/tables/workspaces.js';
import { heartbeatWanted, type ContractRow, type HeartbeatFacts } from '../../workflows/state-machine.js';

/** A ledger row: the contract the forward rule reads (ContractRow), the lease and the restart. */
export interface LedgerRow extends ContractRow {
  lastSeenAt: number | null;
  beats: number;
  leaseWatched: boolean;
  ttlMs: number;
  leaseSince: number;
  signalledVersion: number;
  restartKey: string | null;
  restartAt: number | null;
  activeTasks: number;
}

export class LedgerModel {
  readonly rows = new Map<string, LedgerRow>();

  /** The row a workspace gets at its creation (the migration's defaults). */
  create(workspaceId: string, now: number): LedgerRow {
    const row: LedgerRow = {
      lastSeenAt: null,
      beats: 0,
      want: 'any',
      wantVersion: 1,
      deliveredVersion: 0,
      degradeErrorRate: 0.5,
      recoverErrorRate: 0.1,
      hasCard: false,
      leaseWatched: false,
      ttlMs: 180_000,
      leaseSince: now,
      signalledVersion: 0,
      restartKey: null,
      restartAt: null,
      activeTasks: 0,
    };
    this.rows.set(workspaceId, row);
    return row;
  }

  row(workspaceId: string, now: number): LedgerRow {
    return this.rows.get(workspaceId) ?? this.create(workspaceId, now);
  }

  /** The contract part of a projection write: only from a newer version than the row holds. */
  publish(workspaceId: string, p: Omit<Publication, 'workspaceId'>, now: number): void {
    const row = this.row(workspaceId, now);
    if (row.wantVersion >= p.version) return;
    const { contract } = p;
    row.want = contract.want;
    row.wantVersion = p.version;
    row.degradeErrorRate = contract.degradeErrorRate;
    row.recoverErrorRate = contract.recoverErrorRate;
    row.hasCard = contract.hasCard;
    row.leaseWatched = contract.leaseWatched;
    row.ttlMs = contract.leaseTtlMs;
    row.leaseSince = now - p.leaseAgeMs;
    const restartKey = p.restart?.key ?? null;
    if (row.restartKey !== restartKey) row.restartAt = now - (p.restart?.ageMs ?? 0);
    row.restartKey = restartKey;
  }

  /** The heartbeat's one statement (its token and workspace already checked). */
  record(workspaceId: string, beat: HeartbeatFacts, now: number): HeartbeatRecord {
    const row = this.row(workspaceId, now);
    const wanted = heartbeatWanted(row, beat);
    row.activeTasks = beat.activeTasks;
    if (!wanted) {
      row.lastSeenAt = now;
      row.beats++;
    }
    return { wanted, wantVersion: row.wantVersion };
  }

  delivered(workspaceId: string, wantVersion: number, now: number): void {
    const row = this.row(workspaceId, now);
    row.lastSeenAt = now;
    row.beats++;
    row.deliveredVersion = Math.max(row.deliveredVersion, wantVersion);
  }

  read(workspaceId: string, restartKey: string, now: number): LedgerReading {
    const row = this.rows.get(workspaceId);
    if (row === undefined) return { lastSeenAgeMs: null, seenSinceRestart: false, activeTasks: 0 };
    return {
      lastSeenAgeMs: row.lastSeenAt === null ? null : now - row.lastSeenAt,
      seenSinceRestart:
        row.restartKey === restartKey &&
        row.lastSeenAt !== null &&
        row.restartAt !== null &&
        row.lastSeenAt > row.restartAt,
      activeTasks: row.activeTasks,
    };
  }

  /** Silent for: since the latest of the last heartbeat, the lease's start and `notBefore`. */
  silentForMs(row: LedgerRow, now: number, notBefore: number | null = null): number {
    return now - Math.max(row.lastSeenAt ?? -Infinity, row.leaseSince, notBefore ?? -Infinity);
  }

  findExpired(limit: number, now: number, notBefore: number | null = null): ExpiredLeases {
    const rows = [...this.rows.entries()];
    const expired = rows
      .filter(
        ([, row]) =>
          row.leaseWatched &&
          row.signalledVersion < row.wantVersion &&
          this.silentForMs(row, now, notBefore) >= row.ttlMs,
      )
      .map(([workspaceId, row]) => ({
        workspaceId,
        version: row.wantVersion,
        silentForMs: this.silentForMs(row, now, notBefore),
      }))
      .sort((a, b) => b.silentForMs - a.silentForMs);
    const watched = rows.filter(([, row]) => row.leaseWatched);
    return {
      now: new Date(now).toISOString(),
      watched: watched.length,
      maxTtlMs: Math.max(0, ...watched.map(([, row]) => row.ttlMs)),
      servedAgeMs: null, // the ledger alone: no API serving mark (FakeActivities adds one)
      expired: expired.length,
      leases: expired.slice(0, limit),
    };
  }

  markSignalled(leases: { workspaceId: string; version: number }[]): void {
    for (const { workspaceId, version } of leases) {
      const row = this.rows.get(workspaceId);
      if (row) row.signalledVersion = Math.max(row.signalledVersion, version);
    }
  }
}
