/**
 * The `api_serving` table: when each API process last served, on the database's clock. The
 * fleet liveness controller reads the newest mark with the leases (HeartbeatLedgerTable.findExpired):
 * when no API served, a silent fleet is the observer's silence, not the fleet's.
 */
import type pg from 'pg';

/** Instances not seen for this long are deleted by the next mark: an API process that moved or is gone for good. */
const FORGET_AFTER = '1 day';

export class ApiServingTable {
  constructor(private readonly pool: pg.Pool) {}

  /** This API instance serves now; marks older than a day, of any instance, go. */
  async mark(instance: string): Promise<void> {
    await this.pool.query(
      `WITH forgotten AS (
         DELETE FROM api_serving WHERE last_served_at < now() - interval '${FORGET_AFTER}' AND instance <> $1
       )
       INSERT INTO api_serving (instance, last_served_at) VALUES ($1, now())
       ON CONFLICT (instance) DO UPDATE SET last_served_at = now()`,
      [instance],
    );
  }
}
