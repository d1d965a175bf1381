/**
 * The status-change stream, GET /events, over real HTTP against real PostgreSQL (a database of
 * its own: it asserts on the outbox's global sequence): every projection write's transitions
 * land in the outbox once, the stream resumes with Last-Event-ID without a gap across an API
 * restart, filters by workspace, tells a resume from before the retention, and cuts off a
 * client that reads nothing instead of buffering for it.
 */
import { Client, Connection } from '@temporalio/client';
import type { FastifyInstance } from 'fastify';
import { connect } from 'node:net';
import type { ReadableStreamReadResult } from 'node:stream/web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApi } from '../../api/server.js';
import { STREAM_STALL_MS } from '../../api/routes/events.js';
import type { Store } from '../../db/store.js';
import type { StatusTransition } from '../../db/tables/workspaces.js';
import { TEST_ADMIN_TOKEN, testApiSettings } from '../helpers/api.js';
import { connectTestStore, publication } from '../helpers/postgres.js';
import { uniqueId } from '../helpers/worker.js';

let store: Store;
let connection: Connection;
let client: Client;
const admin = { authorization: `Bearer ${TEST_ADMIN_TOKEN}` };

beforeAll(async () => {
  store = await connectTestStore('events');
  // The stream reads PostgreSQL only; the client is never dialled.
  connection = Connection.lazy({ address: '127.0.0.1:9' });
  client = new Client({ connection });
});

afterAll(async () => {
  await store.close();
  await connection.close();
});

async function startApi(): Promise<{ app: FastifyInstance; url: string }> {
  const app = await buildApi(client, store, testApiSettings('events'));
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, url };
}

interface Received {
  id: string | undefined;
  event: string;
  data: Record<string, unknown>;
}

/** Reads the stream until `until` holds for what it received (or 10 s pass), then disconnects. */
async function readStream(
  url: string,
  headers: Record<string, string>,
  until: (received: Received[]) => boolean,
): Promise<Received[]> {
  const abort = new AbortController();
  const response = await fetch(url, { headers, signal: abort.signal });
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const reader = response.body?.getReader();
  if (reader === undefined) throw new Error('no body');
  const decoder = new TextDecoder();
  const received: Received[] = [];
  let text = '';
  const deadline = setTimeout(() => abort.abort(), 10_000);
  try {
    while (!until(received)) {
      const { value, done } = (await reader.read()) as ReadableStreamReadResult<Uint8Array>;
      if (done) break;
      text += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = text.indexOf('\n\n')) >= 0) {
        const block = text.slice(0, end);
        text = text.slice(end + 2);
        const fields = new Map<string, string>();
        for (const line of block.split('\n')) {
          const colon = line.indexOf(':');
          if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trimStart());
        }
        const data = fields.get('data');
        if (data !== undefined)
          received.push({
            id: fields.get('id'),
            event: fields.get('event') ?? 'message',
            data: JSON.parse(data) as Record<string, unknown>,
          });
      }
    }
  } catch (err) {
    if (!abort.signal.aborted) throw err;
  } finally {
    clearTimeout(deadline);
    abort.abort();
  }
  return received;
}

const statusEvents = (received: Received[]): Received[] => received.filter((r) => r.event === 'status');

/** A projection write as the workflow makes it, with its transitions. */
async function project(workspaceId: string, version: number, transitions: [string, string][]): Promise<number> {
  const at = new Date().toISOString();
  const changes: StatusTransition[] = transitions.map(([from, to]) => ({ from, to, cause: `test ${version}`, at }));
  return store.workspaces.writeProjection(
    publication({
      workspaceId,
      status: transitions[transitions.length - 1]?.[1] ?? 'provisioning',
      url: null,
      statusSince: at,
      version,
      transitions: changes,
    }),
  );
}

async function lastSequence(): Promise<number> {
  return store.events.lastSequence();
}

describe('the event outbox', () => {
  it('records each write’s transitions once, in order, however often the write is retried', async () => {
    const id = uniqueId('outbox');
    const before = await lastSequence();
    expect(
      await project(id, 3, [
        ['online', 'offline'],
        ['offline', 'provisioning'],
      ]),
    ).toBe(2);
    expect(
      await project(id, 3, [
        ['online', 'offline'],
        ['offline', 'provisioning'],
      ]),
    ).toBe(0);
    // A late write of an older version still reports its change, after the newer ones.
    expect(await project(id, 2, [['provisioning', 'online']])).toBe(1);
    const events = await store.events.read(before, id, 10, await lastSequence());
    expect(events.map((e) => [e.seq - before, e.version, e.from, e.to])).toEqual([
      [1, 3, 'online', 'offline'],
      [2, 3, 'offline', 'provisioning'],
      [3, 2, 'provisioning', 'online'],
    ]);
    // The projection kept the newest version.
    const { rows } = await store.pool.query<{ status: string }>('SELECT status FROM workspaces WHERE id = $1', [id]);
    expect(rows[0]?.status).toBe('provisioning');
  });

  it('gives every writer a gap-free sequence number, in commit order, when they write at once', async () => {
    const before = await lastSequence();
    const ids = Array.from({ length: 20 }, () => uniqueId('concurrent'));
    await Promise.all(ids.map((id) => project(id, 1, [['provisioning', 'online']])));
    const events = await store.events.read(before, null, 100, await lastSequence());
    expect(events.map((e) => e.seq)).toEqual(ids.map((_, i) => before + i + 1));
    expect(new Set(events.map((e) => e.workspaceId))).toEqual(new Set(ids));
  });
});

describe('GET /events', () => {
  it('needs the admin token and a valid Last-Event-ID', async () => {
    const { app, url } = await startApi();
    try {
      expect((await fetch(`${url}/events`)).status).toBe(401);
      const bad = await fetch(`${url}/events`, { headers: { ...admin, 'last-event-id': '12abc' } });
      expect(bad.status).toBe(400);
      expect(await bad.json()).toMatchObject({ issues: [{ field: 'headers.last-event-id' }] });
      expect((await fetch(`${url}/events?workspace=${encodeURIComponent('../x')}`, { headers: admin })).status).toBe(
        400,
      );
    } finally {
      await app.close();
    }
  });

  it('streams status changes and resumes after an API restart with Last-Event-ID, nothing lost or repeated', async () => {
    const id = uniqueId('stream');
    const start = await lastSequence();
    for (let version = 1; version <= 3; version++) await project(id, version, [['provisioning', 'online']]);
    let api = await startApi();
    const first = statusEvents(
      await readStream(`${api.url}/events?after=${start}`, admin, (r) => statusEvents(r).length >= 3),
    );
    expect(first.map((e) => Number(e.id))).toEqual([start + 1, start + 2, start + 3]);
    expect(first[0]?.data).toMatchObject({
      seq: start + 1,
      workspace_id: id,
      from: 'provisioning',
      to: 'online',
      cause: 'test 1',
      version: 1,
    });
    await api.app.close();

    // Written while no API runs, and while the next one runs.
    for (let version = 4; version <= 5; version++) await project(id, version, [['online', 'degraded']]);
    api = await startApi();
    try {
      const resumed = readStream(
        `${api.url}/events?after=0`,
        { ...admin, 'last-event-id': String(first[2]?.id) },
        (r) => statusEvents(r).length >= 4,
      );
      await project(id, 6, [['degraded', 'online']]);
      await project(id, 7, [['online', 'offline']]);
      const rest = statusEvents(await resumed);
      expect(rest.map((e) => Number(e.id))).toEqual([start + 4, start + 5, start + 6, start + 7]);
      expect(rest.map((e) => e.data['version'])).toEqual([4, 5, 6, 7]);
    } finally {
      await api.app.close();
    }
  });

  it('filters by workspace; without a starting point it streams only what happens from now on', async () => {
    const [mine, other] = [uniqueId('mine'), uniqueId('other')];
    await project(mine, 1, [['provisioning', 'online']]);
    const { app, url } = await startApi();
    try {
      const stream = readStream(`${url}/events?workspace=${mine}`, admin, (r) => statusEvents(r).length >= 2);
      await new Promise((resolve) => setTimeout(resolve, 300));
      await project(other, 1, [['provisioning', 'online']]);
      await project(mine, 2, [['online', 'offline']]);
      await project(other, 2, [['online', 'offline']]);
      await project(mine, 3, [['offline', 'provisioning']]);
      const received = statusEvents(await stream);
      expect(received.map((e) => [e.data['workspace_id'], e.data['to']])).toEqual([
        [mine, 'offline'],
        [mine, 'provisioning'],
      ]);
    } finally {
      await app.close();
    }
  });

  it('a resume from before the retention is told where the kept events begin; the API deletes expired events', async () => {
    const id = uniqueId('old');
    await project(id, 1, [['provisioning', 'online']]);
    await project(id, 2, [['online', 'offline']]);
    const { rows } = await store.pool.query<{ seq: string }>(
      'SELECT seq FROM workspace_events WHERE workspace_id = $1 ORDER BY seq',
      [id],
    );
    const [expired, kept] = rows.map((row) => Number(row.seq));
    // Everything up to the first one was written long ago.
    await store.pool.query(`UPDATE workspace_events SET recorded_at = now() - interval '1000 hours' WHERE seq <= $1`, [
      expired,
    ]);
    // Starting, the API sweeps the outbox (WL_EVENTS_RETENTION_HOURS: 168 by default).
    const { app, url } = await startApi();
    try {
      await expect
        .poll(async () => (await store.pool.query('SELECT 1 FROM workspace_events WHERE seq = $1', [expired])).rowCount)
        .toBe(0);
      const oldest = (await store.events.oldestSequence()) ?? 0;
      const received = await readStream(
        `${url}/events?workspace=${id}`,
        { ...admin, 'last-event-id': '0' },
        (r) => statusEvents(r).length >= 1,
      );
      expect(oldest).toBe(kept);
      expect(received[0]).toMatchObject({ event: 'gap', data: { after: 0, oldest } });
      expect(statusEvents(received).map((e) => Number(e.id))).toEqual([kept]);
    } finally {
      await app.close();
    }
  });

  it(
    'cuts off a client that reads nothing, instead of buffering the backlog for it',
    async () => {
      // About 20 MB of events, more than the sockets' buffers take.
      const before = await lastSequence();
      await store.pool.query(
        `WITH added AS (
           INSERT INTO workspace_events (seq, workspace_id, version, step, from_status, to_status, cause, at)
           SELECT $1 + n, 'backlog', n, 0, 'online', 'offline', repeat('x', 450), now()
           FROM generate_series(1, 40000) AS n RETURNING seq
         )
         UPDATE workspace_event_sequence SET last_seq = (SELECT max(seq) FROM added)`,
        [before],
      );
      const { app, url } = await startApi();
      try {
        const { port } = new URL(url);
        const socket = connect(Number(port), '127.0.0.1');
        socket.pause(); // never reads
        socket.write(
          `GET /events?after=${before} HTTP/1.1\r\nHost: x\r\nAuthorization: ${admin.authorization}\r\n\r\n`,
        );
        const metrics = async (): Promise<string> => (await fetch(`${url}/metrics`)).text();
        await expect
          .poll(metrics, { timeout: STREAM_STALL_MS + 15_000, interval: 500 })
          .toMatch(/^api_event_streams 1$/m);
        await expect
          .poll(metrics, { timeout: STREAM_STALL_MS + 15_000, interval: 500 })
          .toMatch(/^api_event_streams_cut_total\{reason="slow"\} 1$/m);
        expect(await metrics()).toMatch(/^api_event_streams 0$/m);
        // What the client gets once it reads again is what the sockets held, then the end.
        let bytes = 0;
        const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
        socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
        socket.on('error', () => undefined);
        socket.resume();
        await ended;
        expect(bytes).toBeGreaterThan(0);
        expect(bytes).toBeLessThan(40_000 * 500);
      } finally {
        await app.close();
        await store.pool.query(`DELETE FROM workspace_events WHERE workspace_id = 'backlog'`);
      }
    },
    STREAM_STALL_MS + 30_000,
  );
});
