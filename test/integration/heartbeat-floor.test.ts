/**
 * `npm run bench:heartbeat`'s floor: it answers a heartbeat as the API's route does (200 for a
 * workspace's own token, 401 otherwise) and records it in one statement. The bench's quick mode
 * runs against the end-to-end stack (test/e2e/stack.test.ts).
 */
import { afterAll, describe, expect, inject, it } from 'vitest';
import { FLOOR_TABLE, createFloorTable, fillFloorTable, floorServer } from '../../bench/heartbeat-floor.js';
import { idleHeartbeat } from '../../workflows/payloads.js';

const databaseUrl = inject('databaseUrl');

describe('the bench:heartbeat floor', () => {
  const { app, pool } = floorServer(databaseUrl);
  afterAll(async () => {
    await app.close();
    await pool.query(`DROP TABLE IF EXISTS ${FLOOR_TABLE}`);
    await pool.end();
  });

  it("the floor records a heartbeat with its workspace's token and refuses any other", async () => {
    await createFloorTable(pool);
    const own = { id: 'floor-ws-1', token: 'floor-token-aaaaaaaaaaaaaaaa' };
    const other = { id: 'floor-ws-2', token: 'floor-token-bbbbbbbbbbbbbbbb' };
    await fillFloorTable(pool, [own, other]);
    const beat = (id: string, token: string) =>
      app.inject({
        method: 'POST',
        url: '/registry/heartbeat',
        headers: { authorization: `Bearer ${token}` },
        payload: idleHeartbeat(id, 1),
      });

    expect((await beat(own.id, own.token)).statusCode).toBe(200);
    expect((await beat(own.id, other.token)).statusCode).toBe(401);
    expect((await beat('floor-ws-unknown', own.token)).statusCode).toBe(401);
    const noToken = await app.inject({ method: 'POST', url: '/registry/heartbeat', payload: idleHeartbeat(own.id, 1) });
    expect(noToken.statusCode).toBe(401);
    const { rows } = await pool.query<{ id: string; seen: boolean }>(
      `SELECT id, last_seen_at IS NOT NULL AS seen FROM ${FLOOR_TABLE} ORDER BY id`,
    );
    expect(rows).toEqual([
      { id: own.id, seen: true },
      { id: other.id, seen: false },
    ]);
  });
});
