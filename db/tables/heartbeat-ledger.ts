/**
 * The `workspace_heartbeats` table, the heartbeat ledger: when each workspace's runtime last
 * heartbeat, and which acknowledged heartbeats wait to be forwarded to its workflow. The API
 * records every heartbeat here and forwards only those that can change the workspace's state
 * or are due by the interval (db/migrations: record_heartbeat).
 */
import type pg from 'pg';

export interface HeartbeatRecord {
  outcome: 'ok' | 'not-found' | 'unauthorized';
  forward: boolean;
  beats: number;
  /** The forward can change the workspace's state; otherwise it is due only by the interval. */
  urgent: boolean;
}

export interface HeartbeatLedger {
  lastSeenAt: string | null;
  /** Heartbeats acknowledged but not yet forwarded to the workflow. */
  pending: number;
}

export class HeartbeatLedgerTable {
  constructor(private readonly pool: pg.Pool) {}

  /**
   * Records one heartbeat in the ledger and says whether to forward it to the workflow, in one
   * round trip (db/migrations: record_heartbeat). `beats`: how many acknowledged heartbeats a
   * forward stands for (itself and those coalesced since the last forward). Any outcome but
   * `ok` (an unknown or removed workspace, a token that is not its live one) records nothing.
   */
  async record(
    tokenHash: Buffer,
    workspaceId: string,
    heartbeat: { signature: string; degrades: boolean },
    forwardEveryMs: number,
  ): Promise<HeartbeatRecord> {
    const { rows } = await this.pool.query<HeartbeatRecord>(
      'SELECT outcome, forward, beats, urgent FROM record_heartbeat($1, $2, $3, $4, $5)',
      [tokenHash, workspaceId, heartbeat.signature, heartbeat.degrades, forwardEveryMs],
    );
    return rows[0] ?? { outcome: 'not-found', forward: false, beats: 0, urgent: false };
  }

  /**
   * A register was relayed: it brings the workspace online, so until the next forward is due a
   * heartbeat that does not degrade an online workspace is only recorded (record_heartbeat).
   */
  async noteRegister(workspaceId: string): Promise<void> {
    await this.pool.query(
      `INSERT INTO workspace_heartbeats AS h (workspace_id, last_seen_at, forwarded_at, signature)
       SELECT id, NULL, now(), 'register' FROM workspaces WHERE id = $1
       ON CONFLICT (workspace_id) DO UPDATE SET forwarded_at = now(), signature = 'register'`,
      [workspaceId],
    );
  }

  /** A forward that did not reach the workflow: the heartbeats it carried go back to pending, and the next one forwards. */
  async returnToPending(workspaceId: string, beats: number): Promise<void> {
    await this.pool.query(
      'UPDATE workspace_heartbeats SET pending = pending + $2, forwarded_at = NULL WHERE workspace_id = $1',
      [workspaceId, beats],
    );
  }

  /**
   * A deferred forward that was not sent (no slot free, or its signal failed): its heartbeats go
   * back to pending and the next heartbeat is due to forward them, deferred again. A forward is
   * deferred only when the one before it still stands (for a workspace not online, one made in
   * its current status), so that one is kept: marked as made one interval ago, which is due and
   * not before the status began (a forward is due by the interval only that long after it).
   * Clearing it would make every later heartbeat of a workspace still provisioning an urgent
   * signal, held by the API while Temporal is slow: what the deferral is there to avoid.
   */
  async postponeForward(workspaceId: string, beats: number, forwardEveryMs: number): Promise<void> {
    await this.pool.query(
      `UPDATE workspace_heartbeats
          SET pending = pending + $2, forwarded_at = now() - make_interval(secs => $3 / 1000.0)
        WHERE workspace_id = $1`,
      [workspaceId, beats, forwardEveryMs],
    );
  }

  /** When the workspace's runtime last heartbeat (as the API recorded it), and how many wait to be forwarded. */
  async read(workspaceId: string): Promise<HeartbeatLedger> {
    const { rows } = await this.pool.query<{ last_seen_at: Date | null; pending: number }>(
      'SELECT last_seen_at, pending FROM workspace_heartbeats WHERE workspace_id = $1',
      [workspaceId],
    );
    const row = rows[0];
    return { lastSeenAt: row?.last_seen_at?.toISOString() ?? null, pending: row?.pending ?? 0 };
  }
}
