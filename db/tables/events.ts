/**
 * The `workspace_events` outbox's reads and its retention: the status changes the workflows made,
 * written with their projection writes (WorkspacesTable.writeProjection; the table and its
 * guarantees are in the migration `workspace-events`). Sequence numbers are gap-free and commit
 * in order, so a reader that has seen N has seen every event up to N.
 */
import type pg from 'pg';

/** One status change, as the stream sends it. */
export interface StatusEvent {
  seq: number;
  workspaceId: string;
  from: string;
  to: string;
  cause: string;
  /** When the workflow made the change. */
  at: string;
  /** The projection version of the write that carried it (orders one workspace's events). */
  version: number;
}

export class EventOutbox {
  constructor(private readonly pool: pg.Pool) {}

  /** The last sequence number given: every event up to it is committed. */
  async lastSequence(): Promise<number> {
    const { rows } = await this.pool.query<{ last_seq: string }>('SELECT last_seq FROM workspace_event_sequence');
    return Number(rows[0]?.last_seq ?? 0);
  }

  /** The oldest sequence number still kept, or null when none is. */
  async oldestSequence(): Promise<number | null> {
    const { rows } = await this.pool.query<{ seq: string | null }>('SELECT min(seq) AS seq FROM workspace_events');
    return rows[0]?.seq == null ? null : Number(rows[0].seq);
  }

  /** Up to `limit` events after `after` and up to `upTo`, in order; only `workspaceId`'s when given. */
  async read(after: number, workspaceId: string | null, limit: number, upTo: number): Promise<StatusEvent[]> {
    const { rows } = await this.pool.query<{
      seq: string;
      workspace_id: string;
      from_status: string;
      to_status: string;
      cause: string;
      at: Date;
      version: string;
    }>(
      `SELECT seq, workspace_id, from_status, to_status, cause, at, version FROM workspace_events
       WHERE seq > $1 AND seq <= $4 AND ($2::text IS NULL OR workspace_id = $2) ORDER BY seq LIMIT $3`,
      [after, workspaceId, limit, upTo],
    );
    return rows.map((row) => ({
      seq: Number(row.seq),
      workspaceId: row.workspace_id,
      from: row.from_status,
      to: row.to_status,
      cause: row.cause,
      at: row.at.toISOString(),
      version: Number(row.version),
    }));
  }

  /** Deletes the events written more than `hours` ago; returns how many. */
  async deleteOlderThan(hours: number): Promise<number> {
    const { rowCount } = await this.pool.query(
      'DELETE FROM workspace_events WHERE recorded_at < now() - make_interval(hours => $1)',
      [hours],
    );
    return rowCount ?? 0;
  }
}
