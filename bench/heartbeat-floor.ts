/**
 * The floor of `npm run bench:heartbeat`: the simplest durable heartbeat a competent engineer
 * would write. Fastify and `pg`, one statement per heartbeat on a table of its own in the same
 * PostgreSQL as the API's: the workspace id and the hash of the bearer token must match a row,
 * whose `last_seen_at` becomes the database's now(). No Temporal, no ledger, no admission
 * control. It runs in a process of its own, as the API does, so neither shares the load
 * generator's event loop.
 *
 *   DATABASE_URL=... WL_FLOOR_PORT=... tsx bench/heartbeat-floor.ts
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { hashSecret } from '../db/secrets.js';
import { bearerToken } from '../api/tokens.js';

/** The floor's table: one row per workspace, its token's hash, and when it last heartbeat. */
export const FLOOR_TABLE = 'bench_floor_heartbeats';

/** Creates the floor's table (empty) in the database at `pool`. */
export async function createFloorTable(pool: pg.Pool): Promise<void> {
  await pool.query(`DROP TABLE IF EXISTS ${FLOOR_TABLE}`);
  await pool.query(
    `CREATE TABLE ${FLOOR_TABLE} (id TEXT PRIMARY KEY, token_hash BYTEA NOT NULL, last_seen_at TIMESTAMPTZ)`,
  );
}

/** Gives each workspace its row: its id and the hash of its token, as the API stores tokens. */
export async function fillFloorTable(pool: pg.Pool, runtimes: readonly { id: string; token: string }[]): Promise<void> {
  await pool.query(`INSERT INTO ${FLOOR_TABLE} (id, token_hash) SELECT * FROM unnest($1::text[], $2::bytea[])`, [
    runtimes.map((r) => r.id),
    runtimes.map((r) => hashSecret(r.token)),
  ]);
}

/**
 * The floor's server: `POST /registry/heartbeat` with the API's body and bearer token, answered
 * 200 `{status: 'ok'}` once the row is updated, 401 when no row matches; `GET /healthz`. Its pool
 * has as many connections as the API's (db/store.ts).
 */
export function floorServer(databaseUrl: string): { app: FastifyInstance; pool: pg.Pool } {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 10 });
  const app = Fastify({ logger: false, bodyLimit: 64 * 1024 });
  app.get('/healthz', () => ({ status: 'ok' }));
  app.post<{ Body: { workspace_id: string } }>(
    '/registry/heartbeat',
    {
      schema: {
        body: {
          type: 'object',
          required: ['workspace_id'],
          properties: { workspace_id: { type: 'string', minLength: 1, maxLength: 128 } },
        },
      },
    },
    async (request, reply) => {
      const token = bearerToken(request.headers.authorization);
      if (token === undefined) return reply.code(401).send({ error: 'missing token' });
      const { rowCount } = await pool.query(
        `UPDATE ${FLOOR_TABLE} SET last_seen_at = now() WHERE id = $1 AND token_hash = $2`,
        [request.body.workspace_id, hashSecret(token)],
      );
      if (rowCount !== 1) return reply.code(401).send({ error: 'invalid token' });
      return { status: 'ok' };
    },
  );
  return { app, pool };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const databaseUrl = process.env['DATABASE_URL'];
  const port = Number(process.env['WL_FLOOR_PORT']);
  if (databaseUrl === undefined || !Number.isInteger(port) || port <= 0) {
    console.error('heartbeat-floor: set DATABASE_URL and WL_FLOOR_PORT');
    process.exit(2);
  }
  const { app, pool } = floorServer(databaseUrl);
  const close = (): void => {
    void app
      .close()
      .then(() => pool.end())
      .then(() => process.exit(0));
  };
  process.once('SIGTERM', close);
  process.once('SIGINT', close);
  await app.listen({ host: '127.0.0.1', port });
}
