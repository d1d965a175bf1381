/**
 * The HTTP API against the real time-skipping Temporal server, a real worker (mocked box
 * activities) and real PostgreSQL, through Fastify's in-process injection.
 */
import type { WorkflowHandle } from '@temporalio/client';
import { MockActivityEnvironment, type TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BOOT_CREDENTIAL_FILE } from '../../activities/box/driver.js';
import { LocalBoxDriver } from '../../activities/box/local.js';
import { createLifecycleActivities } from '../../activities/lifecycle.js';
import { defaultAdmissionSettings } from '../../api/admission.js';
import { buildApi, type ApiSettings } from '../../api/server.js';
import { newInstanceToken, REVOKED_TOKEN, UNAUTHENTICATED, WRONG_BOOT_CREDENTIAL } from '../../api/tokens.js';
import { hashSecret } from '../../db/secrets.js';
import { Store } from '../../db/store.js';
import { stateQuery, workspaceWorkflowId } from '../../workflows/definitions.js';
import type { WorkspaceState } from '../../workflows/state-machine.js';
import { apiTestActivities, closeApiTest, TEST_ADMIN_TOKEN, testApiSettings } from '../helpers/api.js';
import { createTimeSkippingEnv } from '../helpers/env.js';
import { FakeActivities } from '../helpers/fake-activities.js';
import { SimulatedRuntime, TOKEN_FILE } from '../../simulator/runtime.js';
import { heartbeatPayload } from '../helpers/payloads.js';
import { connectTestStore, ensureWorkspace, giveBootCredential, readProjection } from '../helpers/postgres.js';
import { createWorker, uniqueId, waitForState } from '../helpers/worker.js';

const ADMIN = TEST_ADMIN_TOKEN;
let env: TestWorkflowEnvironment;
let store: Store;
let worker: Worker;
let running: Promise<void>;
let api: FastifyInstance;
let fake: FakeActivities;
const taskQueue = uniqueId('api-tests');

function settings(overrides: Partial<ApiSettings> = {}): ApiSettings {
  return testApiSettings(taskQueue, { sourceHosts: ['plugins.example.test'] }, overrides);
}

beforeAll(async () => {
  env = await createTimeSkippingEnv();
  // Its own database: the bad-input table asserts that no row was written anywhere.
  store = await connectTestStore('api');
  fake = new FakeActivities();
  worker = await createWorker(env, taskQueue, apiTestActivities(fake, store));
  running = worker.run();
  api = await buildApi(env.client, store, settings());
});

afterAll(() => closeApiTest({ api, worker, running, env, store }));

const admin = { authorization: `Bearer ${ADMIN}` };
const agentUrl = 'http://93.184.216.34:8000'; // a public address literal: passes the SSRF check without DNS

function registerBody(id: string, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { id, url: agentUrl, agent_card: { name: `agent ${id}` }, delivery_mode: 'push', ...overrides };
}

async function createWorkspace(
  plugins: { name: string; source: string }[] = [],
): Promise<{ id: string; token: string }> {
  const id = uniqueId('api');
  const res = await api.inject({ method: 'POST', url: '/workspaces', headers: admin, payload: { id, plugins } });
  expect(res.statusCode, res.body).toBe(201);
  return { id, token: res.json<{ auth_token: string }>().auth_token };
}

/** A workspace registered through the API, online and projected online, with its bearer header and handle. */
async function registeredOnline(): Promise<{
  id: string;
  bearer: { authorization: string };
  handle: WorkflowHandle;
}> {
  const { id, token } = await createWorkspace();
  const bearer = { authorization: `Bearer ${token}` };
  const handle = env.client.workflow.getHandle(workspaceWorkflowId(id));
  await api.inject({ method: 'POST', url: '/registry/register', headers: bearer, payload: registerBody(id) });
  await waitForState(handle, (s) => s.status === 'online' && !s.reconcile.running);
  await expect.poll(async () => (await store.workspaces.access(id))?.status).toBe('online');
  return { id, bearer, handle };
}

async function state(id: string): Promise<WorkspaceState> {
  return env.client.workflow.getHandle(workspaceWorkflowId(id)).query(stateQuery);
}

async function signalsReceived(id: string): Promise<number> {
  const { events } = await env.client.workflow.getHandle(workspaceWorkflowId(id)).fetchHistory();
  return (events ?? []).filter((e) => e.workflowExecutionSignaledEventAttributes).length;
}

async function rowCounts(): Promise<string> {
  const { rows } = await store.pool.query<{ w: string; d: string; t: string }>(
    `SELECT (SELECT count(*) FROM workspaces) AS w, (SELECT count(*) FROM declared_plugins) AS d,
            (SELECT count(*) FROM workspace_tokens) AS t`,
  );
  return JSON.stringify(rows[0]);
}

describe('runtime endpoints', () => {
  it('create, register with the issued token, heartbeat: the register reaches the workflow, the heartbeat is counted', async () => {
    const { id, token } = await createWorkspace([{ name: 'seo', source: 'gitea://acme/seo#main' }]);
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(await store.declaredPlugins.list(id)).toEqual([{ name: 'seo', source: 'gitea://acme/seo#main' }]);
    const bearer = { authorization: `Bearer ${token}` };

    const reg = await api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: bearer,
      payload: registerBody(id),
    });
    expect(reg.statusCode, reg.body).toBe(200);
    expect(reg.json()).toEqual({ status: 'registered', delivery_mode: 'push' }); // a live token exists: none issued
    const hb = await api.inject({
      method: 'POST',
      url: '/registry/heartbeat',
      headers: bearer,
      payload: heartbeatPayload(id),
    });
    expect(hb.statusCode, hb.body).toBe(200);
    expect(hb.json()).toEqual({ status: 'ok' });

    const handle = env.client.workflow.getHandle(workspaceWorkflowId(id));
    const s = await waitForState(handle, (x) => x.counters.registers === 1);
    expect(s).toMatchObject({ status: 'online', url: new URL(agentUrl).href }); // stored normalised
    const got = await api.inject({ method: 'GET', url: `/workspaces/${id}`, headers: admin });
    expect(got.statusCode).toBe(200);
    // Forwarded or only recorded, the heartbeat is in the ledger.
    const view = got.json<WorkspaceState & { heartbeatLedger: { beats: number } }>();
    expect(view).toMatchObject({ workspaceId: id, status: 'online' });
    expect(view.heartbeatLedger.beats).toBe(1);
    await expect.poll(async () => (await readProjection(store, id))?.status).toBe('online');
    const list = await api.inject({ method: 'GET', url: '/workspaces?status=online&limit=1000', headers: admin });
    expect(list.json<{ workspaces: { id: string }[] }>().workspaces.map((w) => w.id)).toContain(id);
  });

  it('bootstrap: a workspace without a live token registers with its boot credential and gets one, shown once', async () => {
    const id = uniqueId('api-boot');
    await ensureWorkspace(store, id);
    const tokenless = await api.inject({ method: 'POST', url: '/registry/register', payload: registerBody(id) });
    expect(tokenless.statusCode, tokenless.body).toBe(401);
    const credential = await giveBootCredential(store, id);
    const first = await api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: { 'x-boot-credential': credential },
      payload: registerBody(id),
    });
    expect(first.statusCode, first.body).toBe(200);
    const token = first.json<{ auth_token?: string }>().auth_token;
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // From now on the bearer is required.
    const anonymous = await api.inject({ method: 'POST', url: '/registry/heartbeat', payload: heartbeatPayload(id) });
    expect(anonymous.statusCode).toBe(401);
    const again = await api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: { authorization: `Bearer ${token ?? ''}` },
      payload: registerBody(id),
    });
    expect(again.json()).toEqual({ status: 'registered', delivery_mode: 'push' });
    // Only the hash is stored.
    const { rows } = await store.pool.query<{ token_hash: Buffer; prefix: string }>(
      'SELECT token_hash, prefix FROM workspace_tokens WHERE workspace_id = $1',
      [id],
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]?.prefix).toBe(token?.slice(0, 8));
    expect(rows[0]?.token_hash.toString('base64url')).not.toBe(token);
  });

  it('a poll-mode workspace re-registers without a url or delivery_mode: its stored mode applies', async () => {
    const { id, token } = await createWorkspace();
    const bearer = { authorization: `Bearer ${token}` };
    const poll = { id, agent_card: { name: 'poller' }, delivery_mode: 'poll' };
    const first = await api.inject({ method: 'POST', url: '/registry/register', headers: bearer, payload: poll });
    expect(first.json()).toEqual({ status: 'registered', delivery_mode: 'poll' });
    await waitForState(env.client.workflow.getHandle(workspaceWorkflowId(id)), (s) => s.deliveryMode === 'poll');
    // The API reads the stored mode from the projection the workflow writes (no worker needed).
    await expect.poll(async () => (await store.workspaces.access(id))?.deliveryMode).toBe('poll');
    const again = await api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: bearer,
      payload: { id, agent_card: { name: 'poller' } },
    });
    expect(again.statusCode, again.body).toBe(200);
    expect(again.json()).toEqual({ status: 'registered', delivery_mode: 'poll' });
  });

  it('an external runtime registers in poll mode by default and is never probed, restarted or delivered to', async () => {
    const id = uniqueId('api-ext');
    const created = await api.inject({
      method: 'POST',
      url: '/workspaces',
      headers: admin,
      payload: {
        id,
        initial_status: 'awaiting_agent',
        plugins: [{ name: 'writer', source: 'github://acme/writer#v1' }],
      },
    });
    expect(created.statusCode, created.body).toBe(201);
    const bearer = { authorization: `Bearer ${created.json<{ auth_token: string }>().auth_token}` };
    // No URL and no mode: the service may not reach an external runtime, so it polls.
    const reg = await api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: bearer,
      payload: { id, agent_card: { name: 'outside' } },
    });
    expect(reg.statusCode, reg.body).toBe(200);
    expect(reg.json()).toEqual({ status: 'registered', delivery_mode: 'poll' });
    const handle = env.client.workflow.getHandle(workspaceWorkflowId(id));
    await waitForState(handle, (s) => s.status === 'online');

    const restart = await api.inject({ method: 'POST', url: `/workspaces/${id}/restart`, headers: admin, payload: {} });
    expect(restart.statusCode, restart.body).toBe(409);
    expect(restart.json()).toEqual({ error: `workspace ${id} runs an external runtime: restart it where it runs` });
    const reconcile = await api.inject({
      method: 'POST',
      url: `/workspaces/${id}/reconcile`,
      headers: admin,
      payload: { refresh: true },
    });
    expect(reconcile.statusCode, reconcile.body).toBe(409);
    expect(reconcile.json()).toEqual({ error: `workspace ${id} runs an external runtime: it loads its own plugins` });
    const verdict = await api.inject({
      method: 'POST',
      url: `/workspaces/${id}/dispatch-failed`,
      headers: admin,
      payload: { caller: 'a2a' },
    });
    expect(verdict.statusCode, verdict.body).toBe(200);
    expect(verdict.json()).toEqual({
      verdict: 'alive',
      detail: 'the runtime is external: the service neither probes nor restarts it',
    });
    const s = await state(id);
    expect(s).toMatchObject({ runtime: 'external', deliveryMode: 'poll', status: 'online' });
    expect(s.counters.reconcilesStarted).toBe(0);
    expect(s.restart.count).toBe(0);
    expect(fake.probes.filter((p) => p === id)).toEqual([]);
    expect(fake.reconcileCalls.filter((c) => c.workspaceId === id)).toEqual([]);
    expect(await store.tokens.liveCount(id)).toBe(1);
  });

  it('a heartbeat the workflow does not want is recorded and answered at once; one it wants is forwarded, answered once Temporal has it', async () => {
    const { id, bearer, handle } = await registeredOnline();
    const beat = async (overrides: Record<string, unknown> = {}): Promise<void> => {
      const res = await api.inject({
        method: 'POST',
        url: '/registry/heartbeat',
        headers: bearer,
        payload: heartbeatPayload(id, overrides),
      });
      expect(res.statusCode, res.body).toBe(200);
    };
    // Online, the workflow wants a heartbeat that degrades it: the healthy ones are only recorded.
    await expect.poll(async () => (await store.heartbeats.read(id)).want).toBe('degrading');
    const signalsBefore = await signalsReceived(id);
    for (let i = 0; i < 6; i++) await beat({ error_rate: 0.01 * i, uptime_seconds: i });
    expect(await signalsReceived(id)).toBe(signalsBefore);
    expect((await store.heartbeats.read(id)).beats).toBe(6);

    // A degrading heartbeat is forwarded: answered once Temporal has it, then recorded.
    await beat({ error_rate: 0.9 });
    expect(await signalsReceived(id)).toBe(signalsBefore + 1);
    const degraded = await waitForState(handle, (s) => s.status === 'degraded');
    expect(degraded.counters.heartbeats).toBe(1);
    expect(degraded.lastHeartbeat?.errorRate).toBe(0.9);
    expect((await store.heartbeats.read(id)).beats).toBe(7);

    // Degraded, it wants one that recovers: another degrading one is only recorded.
    await expect.poll(async () => (await store.heartbeats.read(id)).want).toBe('recovering');
    await beat({ error_rate: 0.9 });
    expect(await signalsReceived(id)).toBe(signalsBefore + 1);
    await beat({ error_rate: 0 });
    expect((await waitForState(handle, (s) => s.status === 'online')).counters.heartbeats).toBe(2);

    // What an operator reads: every acknowledged heartbeat in the ledger, and what the workflow wants.
    const read = await api.inject({ method: 'GET', url: `/workspaces/${id}`, headers: admin });
    const body = read.json<WorkspaceState & { heartbeatLedger: { lastSeenAt: string; beats: number } }>();
    expect(body.heartbeatLedger.beats).toBe(9);
    expect(Date.now() - Date.parse(body.heartbeatLedger.lastSeenAt)).toBeLessThan(10_000);
  });

  it('issue 29 case 2: a wanted heartbeat that does not reach the workflow is 503 and records nothing; its retry is wanted again', async () => {
    const { id, bearer, handle } = await registeredOnline();
    const send = (extra: Record<string, unknown> = {}, server = api) =>
      server.inject({
        method: 'POST',
        url: '/registry/heartbeat',
        headers: bearer,
        payload: heartbeatPayload(id, extra),
      });
    await expect.poll(async () => (await store.heartbeats.read(id)).want).toBe('degrading');
    expect((await send()).statusCode).toBe(200);
    expect((await send()).statusCode).toBe(200);
    const before = await store.heartbeats.read(id);
    // An API whose Temporal calls all fail: the degrading heartbeat is 503, and nothing is recorded.
    const doomed = await createTimeSkippingEnv();
    const broken = await buildApi(doomed.client, store, settings({ temporalTimeoutMs: 2_000 }));
    await doomed.teardown();
    try {
      const failed = await send({ error_rate: 0.9 }, broken);
      expect(failed.statusCode, failed.body).toBe(503);
    } finally {
      await broken.close();
    }
    expect(await store.heartbeats.read(id)).toEqual(before);
    // An API that stopped between deciding and signalling: the statement decided, nothing followed.
    const decided = await store.heartbeats.record(hashSecret(bearer.authorization.slice('Bearer '.length)), id, {
      errorRate: 0.9,
      runtimeState: '',
      managesOwnStatus: false,
      bringsCard: false,
    });
    expect(decided).toMatchObject({ wanted: true });
    // The runtime's retry is wanted again, forwarded, and degrades the workspace.
    expect((await send({ error_rate: 0.9 })).statusCode).toBe(200);
    const degraded = await waitForState(handle, (s) => s.status === 'degraded');
    expect(degraded.counters.heartbeats).toBe(1);
    expect((await store.heartbeats.read(id)).beats).toBe(3);
  });

  it('auth: none or a wrong token is 401; a token of another workspace is 403', async () => {
    const a = await createWorkspace();
    const b = await createWorkspace();
    const heartbeat = (headers: Record<string, string>): Promise<number> =>
      api
        .inject({ method: 'POST', url: '/registry/heartbeat', headers, payload: heartbeatPayload(a.id) })
        .then((r) => r.statusCode);
    expect(await heartbeat({})).toBe(401);
    expect(await heartbeat({ authorization: 'Bearer not-a-real-token-at-all' })).toBe(401);
    expect(await heartbeat({ authorization: `Basic ${a.token}` })).toBe(401);
    expect(await heartbeat({ authorization: `Bearer ${b.token}` })).toBe(403);
    expect(await heartbeat({ authorization: `Bearer ${a.token}` })).toBe(200);
  });

  it('a call without valid credentials gets one answer whatever the id names, and reads nothing about the workspace', async () => {
    // The ids: unknown, live with a token, registered then revoked (bootstrap), removed.
    const live = await createWorkspace();
    const revoked = await createWorkspace();
    await store.tokens.revoke(revoked.id);
    await giveBootCredential(store, revoked.id);
    const removed = await createWorkspace();
    expect((await api.inject({ method: 'DELETE', url: `/workspaces/${removed.id}`, headers: admin })).statusCode).toBe(
      202,
    );
    const ids = [uniqueId('api-nobody'), live.id, revoked.id, removed.id];
    // Which store methods each call reaches (`table.method`), through an API of its own over a recording store.
    const reached: string[] = [];
    const recording = recordingProxy(store, '', reached);
    const watched = await buildApi(env.client, recording, settings());
    const wrongToken = `Bearer ${'W'.repeat(43)}`;
    const credentialSets: [string, Record<string, string>, string[]][] = [
      ['none', {}, []],
      ['a malformed bearer', { authorization: 'Bearer short' }, []],
      ['a wrong token', { authorization: wrongToken }, ['tokens.owner']],
      ['a wrong boot credential', { 'x-boot-credential': 'B'.repeat(43) }, ['bootCredentials.owners']],
      ['a malformed boot credential', { 'x-boot-credential': 'no' }, []],
    ];
    try {
      for (const [what, headers, register] of credentialSets) {
        const answers = new Set<string>();
        for (const id of ids) {
          reached.length = 0;
          const reg = await watched.inject({
            method: 'POST',
            url: '/registry/register',
            headers,
            payload: registerBody(id),
          });
          answers.add(`register ${reg.statusCode} ${reg.body}`);
          expect({ what, id, reached: [...reached] }).toEqual({ what, id, reached: register });
          reached.length = 0;
          const hb = await watched.inject({
            method: 'POST',
            url: '/registry/heartbeat',
            headers,
            payload: heartbeatPayload(id),
          });
          answers.add(`heartbeat ${hb.statusCode} ${hb.body}`);
          // The heartbeat's one round trip checks the token first; the long way reads it again.
          const beat = headers.authorization === wrongToken ? ['heartbeats.record', 'tokens.owner'] : [];
          expect({ what, id, reached: [...reached] }).toEqual({ what, id, reached: beat });
        }
        // One register answer and one heartbeat answer for the four ids, each a 401.
        expect({ what, answers: [...answers].map((a) => a.split(' ').slice(0, 2).join(' ')) }).toEqual({
          what,
          answers: ['register 401', 'heartbeat 401'],
        });
      }
    } finally {
      await watched.close();
    }
  });

  it('a live token of one workspace is 403 for any other id, whether it exists or not', async () => {
    const a = await createWorkspace();
    const b = await createWorkspace();
    const bearer = { authorization: `Bearer ${a.token}` };
    const answers = new Set<string>();
    for (const id of [b.id, uniqueId('api-nobody')]) {
      const hb = await api.inject({
        method: 'POST',
        url: '/registry/heartbeat',
        headers: bearer,
        payload: heartbeatPayload(id),
      });
      const reg = await api.inject({
        method: 'POST',
        url: '/registry/register',
        headers: bearer,
        payload: registerBody(id),
      });
      answers.add(`${hb.statusCode} ${hb.body}`).add(`${reg.statusCode} ${reg.body}`);
    }
    expect([...answers]).toEqual(['403 {"error":"token belongs to another workspace"}']);
  });

  it('dead detection revokes the token: the workspace is back in bootstrap and its next register, with the boot credential, mints a new one', async () => {
    const { id, token } = await createWorkspace();
    fake.probeScript.set(id, ['not-running']);
    await api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: { authorization: `Bearer ${token}` },
      payload: registerBody(id),
    });
    await waitForState(env.client.workflow.getHandle(workspaceWorkflowId(id)), (s) => s.status === 'online');
    const res = await api.inject({
      method: 'POST',
      url: `/workspaces/${id}/dispatch-failed`,
      headers: admin,
      payload: { caller: 'a2a' },
    });
    expect(res.statusCode, res.body).toBe(503);
    expect(res.headers['retry-after']).toBe('15');
    expect(res.json()).toMatchObject({ verdict: 'dead' });
    await expect.poll(() => store.tokens.liveCount(id)).toBe(0);

    // Bootstrap is for a register only: a heartbeat with the revoked token, or with none, is 401
    // and never reaches the workflow. The revoked token's holder is told it was revoked.
    const heartbeatsBefore = (await state(id)).counters.heartbeats;
    const answers: [Record<string, string>, string][] = [
      [{ authorization: `Bearer ${token}` }, REVOKED_TOKEN],
      [{}, UNAUTHENTICATED],
    ];
    for (const [headers, error] of answers) {
      const hb = await api.inject({
        method: 'POST',
        url: '/registry/heartbeat',
        headers,
        payload: heartbeatPayload(id),
      });
      expect(hb.statusCode, hb.body).toBe(401);
      expect(hb.json()).toEqual({ error });
    }
    expect((await state(id)).counters.heartbeats).toBe(heartbeatsBefore);

    // The old token no longer counts, and neither does a register without a credential: the
    // restarted runtime registers with the boot credential its box was started with, and gets a new token.
    for (const [headers, error] of answers) {
      const refused = await api.inject({
        method: 'POST',
        url: '/registry/register',
        headers,
        payload: registerBody(id),
      });
      expect(refused.statusCode, refused.body).toBe(401);
      expect(refused.json()).toEqual({ error });
    }
    const reg = await api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: { 'x-boot-credential': await giveBootCredential(store, id) },
      payload: registerBody(id),
    });
    expect(reg.statusCode, reg.body).toBe(200);
    const fresh = reg.json<{ auth_token?: string }>().auth_token;
    expect(fresh).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(fresh).not.toBe(token);
    expect(await store.tokens.liveCount(id)).toBe(1);
    // A late retry of that verdict's revocation leaves the token minted after it alone.
    const verdictAt = (await state(id)).deadDetection.lastVerdict?.at ?? '';
    expect(await store.tokens.revoke(id, verdictAt)).toBe(0);
    expect(await store.tokens.liveCount(id)).toBe(1);
  });

  it('heartbeat and register for an unknown workspace are 401, for a removed one 404 to its own token, and start nothing', async () => {
    const unknown = uniqueId('api-unknown');
    const hb = await api.inject({ method: 'POST', url: '/registry/heartbeat', payload: heartbeatPayload(unknown) });
    expect(hb.statusCode).toBe(401);
    expect(hb.json()).toEqual({ error: UNAUTHENTICATED });
    await expect(env.client.workflow.getHandle(workspaceWorkflowId(unknown)).describe()).rejects.toThrow();

    const { id, token } = await createWorkspace();
    const del = await api.inject({ method: 'DELETE', url: `/workspaces/${id}`, headers: admin });
    expect(del.statusCode).toBe(202);
    // Removed from the moment the DELETE was answered: no window while the workflow winds down.
    const bearer = { authorization: `Bearer ${token}` };
    const [hbAtOnce, regAtOnce, restartAtOnce] = await Promise.all([
      api.inject({ method: 'POST', url: '/registry/heartbeat', headers: bearer, payload: heartbeatPayload(id) }),
      api.inject({ method: 'POST', url: '/registry/register', headers: bearer, payload: registerBody(id) }),
      api.inject({ method: 'POST', url: `/workspaces/${id}/restart`, headers: admin, payload: {} }),
    ]);
    expect([hbAtOnce.statusCode, regAtOnce.statusCode, restartAtOnce.statusCode]).toEqual([404, 404, 404]);
    expect(hbAtOnce.json()).toEqual({ error: `workspace ${id} is removed` });
    await env.client.workflow.getHandle(workspaceWorkflowId(id)).result();
    expect((await readProjection(store, id))?.status).toBe('removed');
    const late = await api.inject({
      method: 'POST',
      url: '/registry/heartbeat',
      headers: { authorization: `Bearer ${token}` },
      payload: heartbeatPayload(id),
    });
    expect(late.statusCode).toBe(404);
    expect(late.json()).toEqual({ error: `workspace ${id} is removed` });
  });
});

describe('boot credential', () => {
  let boxesDir: string;
  let driver: LocalBoxDriver;
  beforeAll(async () => {
    boxesDir = await mkdtemp(join(tmpdir(), 'wl-boot-'));
    driver = new LocalBoxDriver({ root: boxesDir, runtimeCommand: null });
  });
  afterAll(async () => {
    await rm(boxesDir, { recursive: true, force: true });
  });

  const register = (id: string, headers: Record<string, string> = {}) =>
    api.inject({ method: 'POST', url: '/registry/register', headers, payload: registerBody(id) });

  /** A registered workspace whose tokens a dead verdict then revoked. */
  async function revokedWorkspace(): Promise<{ id: string; token: string }> {
    const created = await createWorkspace();
    expect((await register(created.id, { authorization: `Bearer ${created.token}` })).statusCode).toBe(200);
    expect(await store.tokens.revoke(created.id)).toBe(1);
    return created;
  }

  it('a rollout setting lets credential-less registers through for runtimes not yet updated (off by default)', async () => {
    const { id } = await revokedWorkspace();
    expect((await register(id)).statusCode).toBe(401);
    const rollout = await buildApi(env.client, store, settings({ bootstrapWithoutCredential: true }));
    try {
      const res = await rollout.inject({ method: 'POST', url: '/registry/register', payload: registerBody(id) });
      expect(res.statusCode, res.body).toBe(200);
      expect(res.json<{ auth_token?: string }>().auth_token).toMatch(/^[A-Za-z0-9_-]{43}$/);
      // The token is live now: the next credential-less register is refused, even here.
      const again = await rollout.inject({ method: 'POST', url: '/registry/register', payload: registerBody(id) });
      expect(again.statusCode).toBe(401);
    } finally {
      await rollout.close();
    }
  });

  /** The restart activity, as the worker runs it, on a local box; the credential it left in the box. */
  async function restartBox(id: string): Promise<string> {
    await driver.createBox(id);
    const activities = createLifecycleActivities({ store, driver });
    const input = { workspaceId: id, restartId: `r-${id}` };
    const result = await new MockActivityEnvironment().run((i: typeof input) => activities.restartBox(i), input);
    // A second run for the same restart id is a retried activity: the box is not restarted twice.
    expect(['restarted', 'already-restarted']).toContain(result);
    return (await readFile(join(driver.boxDir(id), BOOT_CREDENTIAL_FILE), 'utf8')).trim();
  }

  it('after a revocation, a register with no credential, the revoked token or a wrong credential is 401', async () => {
    const { id, token } = await revokedWorkspace();
    const attempts: [Record<string, string>, string][] = [
      [{}, UNAUTHENTICATED],
      [{ authorization: `Bearer ${token}` }, REVOKED_TOKEN],
    ];
    for (const [headers, error] of attempts) {
      const res = await register(id, headers);
      expect(res.statusCode, res.body).toBe(401);
      expect(res.json()).toEqual({ error });
    }
    await restartBox(id);
    const wrong = await register(id, { 'x-boot-credential': 'A'.repeat(43) });
    expect(wrong.statusCode, wrong.body).toBe(401);
    expect(wrong.json<{ error: string }>().error).toMatch(/boot credential is wrong or already used/);
    expect(await store.tokens.liveCount(id)).toBe(0);
  });

  it('the credential the restart wrote into the box registers once, and mints a new token', async () => {
    const { id, token } = await revokedWorkspace();
    const credential = await restartBox(id);
    expect(credential).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // Only its hash is stored.
    const { rows } = await store.pool.query<{ credential_hash: Buffer }>(
      'SELECT credential_hash FROM workspace_boot_credentials WHERE workspace_id = $1',
      [id],
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]?.credential_hash.toString('base64url')).not.toBe(credential);

    const first = await register(id, { 'x-boot-credential': credential });
    expect(first.statusCode, first.body).toBe(200);
    const fresh = first.json<{ auth_token?: string }>().auth_token;
    expect(fresh).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(fresh).not.toBe(token);
    expect(await store.tokens.liveCount(id)).toBe(1);

    // One-time: the same credential again (consumed as the token was minted).
    const again = await register(id, { 'x-boot-credential': credential });
    expect(again.statusCode, again.body).toBe(401);
    expect(again.json()).toEqual({ error: WRONG_BOOT_CREDENTIAL });
    // Even once the new token is revoked too.
    await store.tokens.revoke(id);
    const used = await register(id, { 'x-boot-credential': credential });
    expect(used.statusCode, used.body).toBe(401);
    expect(used.json<{ error: string }>().error).toMatch(/boot credential is wrong or already used/);
  });

  it('a retried restart replaces the credential: only the one the box holds now registers', async () => {
    const { id } = await revokedWorkspace();
    const older = await restartBox(id);
    const newer = await restartBox(id);
    expect(newer).not.toBe(older);
    const stale = await register(id, { 'x-boot-credential': older });
    expect(stale.statusCode, stale.body).toBe(401);
    const res = await register(id, { 'x-boot-credential': newer });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json<{ auth_token?: string }>().auth_token).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('two registers racing with the same credential: exactly one gets a token', async () => {
    const { id } = await revokedWorkspace();
    const credential = await restartBox(id);
    const answers = await Promise.all([1, 2, 3].map(() => register(id, { 'x-boot-credential': credential })));
    const tokens = answers.flatMap((a) =>
      a.statusCode === 200 ? [a.json<{ auth_token?: string }>().auth_token ?? 'none'] : [],
    );
    expect(tokens).toHaveLength(1);
    expect(tokens[0]).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(answers.filter((a) => a.statusCode === 401)).toHaveLength(2);
    expect(await store.tokens.liveCount(id)).toBe(1);
  });

  it('the simulated runtime, its token revoked, registers again with the credential the restart left in its box', async () => {
    const { id, token } = await revokedWorkspace();
    await driver.createBox(id);
    await writeFile(join(driver.boxDir(id), TOKEN_FILE), `${token}\n`);
    await restartBox(id);
    const served = await buildApi(env.client, store, settings());
    const stop = new AbortController();
    const lines: string[] = [];
    try {
      const apiUrl = await served.listen({ host: '127.0.0.1', port: 0 });
      const workspaceDir = driver.boxDir(id);
      const runtime = new SimulatedRuntime(
        { workspaceId: id, workspaceDir, apiUrl, heartbeatMs: 100 },
        stop.signal,
        (l) => lines.push(l),
      );
      const running = runtime.run();
      await expect.poll(() => store.tokens.liveCount(id), { timeout: 10_000 }).toBe(1);
      await expect
        .poll(async () => (await readFile(join(workspaceDir, TOKEN_FILE), 'utf8')).trim(), { timeout: 10_000 })
        .not.toBe(token);
      await expect.poll(() => lines.some((l) => l.startsWith('heartbeat ok')), { timeout: 10_000 }).toBe(true);
      stop.abort();
      await running;
    } finally {
      stop.abort();
      await served.close();
    }
    expect(lines.join('\n')).toContain(`register refused (401 ${REVOKED_TOKEN})`);
    expect(await store.bootCredentials.hash(id)).toBeNull();
  });

  it('a live bearer token still registers, with or without a pending credential', async () => {
    const { id, token } = await createWorkspace();
    const bearer = { authorization: `Bearer ${token}` };
    expect((await register(id, bearer)).json()).toEqual({ status: 'registered', delivery_mode: 'push' });
    const credential = await restartBox(id);
    const res = await register(id, { ...bearer, 'x-boot-credential': credential });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toEqual({ status: 'registered', delivery_mode: 'push' });
    expect(await store.tokens.liveCount(id)).toBe(1);
    const view = await api.inject({ method: 'GET', url: `/workspaces/${id}`, headers: admin });
    expect(view.json<{ bootCredentialPending?: boolean }>().bootCredentialPending).toBe(true);
  });
});

describe('workspace management', () => {
  it('a box reached over SSH: settings stored with a pinned host key, shown by GET, back to local; bad settings name the field', async () => {
    const { id } = await createWorkspace();
    const ssh = {
      driver: 'ssh',
      host: '10.0.0.5',
      user: 'agent',
      key_ref: 'fleet-key',
      host_key: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHcUu9gOeOeNK4Jc8Q6kG0xB9Z9nC9ZkcdYPh6lqfA8x',
      root: '/home/agent/box',
      restart_command: 'sudo systemctl restart agent',
      running_command: 'systemctl is-active --quiet agent',
    };
    const set = await api.inject({ method: 'PUT', url: `/workspaces/${id}/box`, headers: admin, payload: ssh });
    expect(set.statusCode, set.body).toBe(200);
    expect(set.json()).toEqual({ status: 'box set', box: { ...ssh, port: 22 } });
    expect(await store.boxSettings.read(id)).toEqual({
      driver: 'ssh',
      host: '10.0.0.5',
      port: 22,
      user: 'agent',
      keyRef: 'fleet-key',
      hostKey: ssh.host_key,
      root: '/home/agent/box',
      restartCommand: 'sudo systemctl restart agent',
      runningCommand: 'systemctl is-active --quiet agent',
    });
    const read = await api.inject({ method: 'GET', url: `/workspaces/${id}`, headers: admin });
    expect(read.json<{ box: unknown }>().box).toEqual({ ...ssh, port: 22 });

    for (const [field, value, says] of [
      ['host_key', 'AAAA', 'public host key'],
      ['key_ref', '../../etc/shadow', 'no slashes'],
      ['root', 'relative/box', 'absolute path'],
      ['root', '//', 'other than /'],
      ['restart_command', '   ', 'not blank'],
      ['port', 70000, 'port'],
    ] as const) {
      const bad = await api.inject({
        method: 'PUT',
        url: `/workspaces/${id}/box`,
        headers: admin,
        payload: { ...ssh, [field]: value },
      });
      expect(bad.statusCode, `${field}: ${bad.body}`).toBe(400);
      expect(bad.body).toContain(says);
    }
    expect(await store.boxSettings.read(id)).toMatchObject({ host: '10.0.0.5' });

    const local = await api.inject({
      method: 'PUT',
      url: `/workspaces/${id}/box`,
      headers: admin,
      payload: { driver: 'local' },
    });
    expect(local.statusCode, local.body).toBe(200);
    expect(await store.boxSettings.read(id)).toBeNull();
    const unknown = await api.inject({
      method: 'PUT',
      url: '/workspaces/nobody-here/box',
      headers: admin,
      payload: { driver: 'local' },
    });
    expect(unknown.statusCode).toBe(404);
  });

  it('restart, declared plugins and dispatch-failed verdicts reach the workflow', async () => {
    const { id, token } = await createWorkspace();
    await api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: { authorization: `Bearer ${token}` },
      payload: registerBody(id),
    });
    const handle = env.client.workflow.getHandle(workspaceWorkflowId(id));
    await waitForState(handle, (s) => s.status === 'online' && !s.reconcile.running);

    const put = await api.inject({
      method: 'PUT',
      url: `/workspaces/${id}/plugins`,
      headers: admin,
      payload: { plugins: [{ name: 'writer', source: 'github://acme/writer#v1' }] },
    });
    expect(put.statusCode, put.body).toBe(202);
    expect(await store.declaredPlugins.list(id)).toEqual([{ name: 'writer', source: 'github://acme/writer#v1' }]);
    await waitForState(handle, (s) => s.counters.reconcilesStarted === 2 && !s.reconcile.running);
    expect(fake.reconcileCalls.filter((c) => c.workspaceId === id).at(-1)?.trigger).toBe('plugins declared');

    const alive = await api.inject({
      method: 'POST',
      url: `/workspaces/${id}/dispatch-failed`,
      headers: admin,
      payload: {},
    });
    expect(alive.statusCode, alive.body).toBe(200);
    expect(alive.json()).toEqual({ verdict: 'alive', detail: 'the box is running' });

    const restart = await api.inject({
      method: 'POST',
      url: `/workspaces/${id}/restart`,
      headers: admin,
      payload: { reason: 'rotate' },
    });
    expect(restart.statusCode).toBe(202);
    const s = await waitForState(handle, (x) => x.restart.count === 1 && !x.restart.inFlight);
    expect(s.restart).toMatchObject({ lastReason: 'rotate', lastRequester: 'operator' });

    // An operator's reconcile: verify by default, refresh on request; the workflow runs it.
    const passes = s.counters.reconcilesRequested;
    for (const [payload, mode] of [
      [{}, 'verify'],
      [{ refresh: true }, 'refresh'],
    ] as const) {
      const res = await api.inject({ method: 'POST', url: `/workspaces/${id}/reconcile`, headers: admin, payload });
      expect(res.statusCode, res.body).toBe(202);
      expect(res.json()).toEqual({ status: 'reconcile requested', mode });
    }
    const after = await waitForState(handle, (x) => x.counters.reconcilesRequested === passes + 2);
    expect(after.reconcile.lastVerifyAt).not.toBeNull();
  });

  it('a create writes its row, its plugins and one live token together; one a constraint refuses writes none', async () => {
    const plugins = [
      { name: 'seo', source: 'gitea://acme/seo#main' },
      { name: 'lint', source: 'local://lint' },
    ];
    const { id } = await createWorkspace(plugins);
    expect(await store.tokens.liveCount(id)).toBe(1);
    expect(await store.declaredPlugins.list(id)).toEqual(expect.arrayContaining(plugins));

    const before = await rowCounts();
    const refused = `${id}-refused`;
    const token = newInstanceToken().stored;
    // A plugin name the table's check refuses (the API's schema refuses it first).
    const bad = [...plugins, { name: '../escape', source: 'local://x' }];
    await expect(store.workspaces.create(refused, bad, false, token)).rejects.toThrow(/check constraint/);
    expect(await store.workspaces.access(refused)).toBeNull();
    // The id taken: nothing written either, the first token still the only one.
    expect(await store.workspaces.create(id, [], false, newInstanceToken().stored)).toBe(false);
    expect(await rowCounts()).toBe(before);
    expect(await store.tokens.liveCount(id)).toBe(1);
  });

  it('a workspace id of the longest valid length (128) is reachable at its path', async () => {
    const id = `${'a'.repeat(120)}-${process.pid % 10_000_000}`.slice(0, 128).padEnd(128, 'b');
    const created = await api.inject({ method: 'POST', url: '/workspaces', headers: admin, payload: { id } });
    expect(created.statusCode, created.body).toBe(201);
    const view = await api.inject({ method: 'GET', url: `/workspaces/${id}`, headers: admin });
    expect(view.statusCode, view.body).toBe(200);
    const removed = await api.inject({ method: 'DELETE', url: `/workspaces/${id}`, headers: admin });
    expect(removed.statusCode, removed.body).toBe(202);
  });

  it('a duplicate workspace id is 409 and writes nothing', async () => {
    const { id } = await createWorkspace();
    const before = await rowCounts();
    const res = await api.inject({ method: 'POST', url: '/workspaces', headers: admin, payload: { id } });
    expect(res.statusCode).toBe(409);
    expect(await rowCounts()).toBe(before);
  });
});

describe('bad input: a clear error, no signal, no row', () => {
  let target: { id: string; token: string };
  beforeAll(async () => {
    target = await createWorkspace();
  });
  const big = 'x'.repeat(70 * 1024);
  /** Arrays nested 20,000 deep: 40 KB of JSON, within the body limit. */
  const deep = '['.repeat(20_000) + ']'.repeat(20_000);

  interface BadCase {
    name: string;
    method: 'POST' | 'GET' | 'PUT' | 'DELETE';
    url: (id: string) => string;
    body?: (id: string) => unknown;
    raw?: string;
    contentType?: string;
    auth?: 'admin' | 'runtime' | 'none' | 'wrong-admin';
    status: number;
    /** Substring of the error, or of one issue's `field: problem`. */
    says: string;
  }
  const register =
    (patch: (id: string) => Record<string, unknown>): ((id: string) => unknown) =>
    (id) => ({
      ...registerBody(id),
      ...patch(id),
    });
  const heartbeat =
    (patch: Record<string, unknown>): ((id: string) => unknown) =>
    (id) => ({
      ...heartbeatPayload(id),
      ...patch,
    });
  const cases: BadCase[] = [
    {
      name: 'malformed JSON',
      method: 'POST',
      url: () => '/registry/register',
      raw: '{"id": ',
      status: 400,
      says: 'body: Body is not valid JSON',
    },
    {
      name: 'malformed JSON on heartbeat',
      method: 'POST',
      url: () => '/registry/heartbeat',
      raw: '{"workspace_id": "x",',
      status: 400,
      says: 'body: ',
    },
    {
      name: 'malformed JSON on declared plugins',
      method: 'PUT',
      url: (id) => `/workspaces/${id}/plugins`,
      raw: '{"plugins": [}',
      status: 400,
      says: 'body: ',
    },
    {
      name: 'plugin source file:///etc (unknown scheme)',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-9', plugins: [{ name: 'etc', source: 'file:///etc' }] }),
      status: 400,
      says: 'body.plugins.0.source: ',
    },
    {
      name: 'unpinned git+file source',
      method: 'PUT',
      url: (id) => `/workspaces/${id}/plugins`,
      body: () => ({ plugins: [{ name: 'repo', source: 'git+file:///srv/plugins/repo.git' }] }),
      status: 400,
      says: 'body.plugins.0.source: plugin source git+file:///srv/plugins/repo.git is unpinned',
    },
    {
      name: 'git+file source outside the allowed directories',
      method: 'PUT',
      url: (id) => `/workspaces/${id}/plugins`,
      body: () => ({ plugins: [{ name: 'repo', source: 'git+file:///srv/plugins/../secrets/repo.git#main' }] }),
      status: 400,
      says: '/srv/secrets/repo.git is outside the directories git+file:// sources may read',
    },
    {
      name: 'git+https source on a host not allowed',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-10', plugins: [{ name: 'x', source: 'git+https://attacker.test/x.git#main' }] }),
      status: 400,
      says: 'host attacker.test is not one git sources may name',
    },
    {
      name: 'agent_card.url is cloud metadata',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: undefined, agent_card: { name: 'x', url: 'http://169.254.169.254/' } })),
      status: 400,
      says: 'body.agent_card.url: resolves to 169.254.169.254',
    },
    {
      name: 'body is an array',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: () => [1, 2],
      status: 400,
      says: 'body',
    },
    {
      name: 'register without id',
      method: 'POST',
      url: () => '/registry/register',
      body: (id) => ({ url: agentUrl, agent_card: {}, id: undefined, x: id }),
      status: 400,
      says: 'body.id',
    },
    {
      name: 'register id is a number',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ id: 42 })),
      status: 400,
      says: 'body.id',
    },
    {
      name: 'register without agent_card',
      method: 'POST',
      url: () => '/registry/register',
      body: (id) => ({ id, url: agentUrl }),
      status: 400,
      says: 'body.agent_card',
    },
    {
      name: 'agent_card is a string',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ agent_card: 'card' })),
      status: 400,
      says: 'body.agent_card',
    },
    {
      name: 'url is ftp',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: 'ftp://box/agent' })),
      status: 400,
      says: 'must be an http(s) URL',
    },
    {
      name: 'url is javascript:',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: 'javascript:alert(1)' })),
      status: 400,
      says: 'body.url',
    },
    {
      name: 'delivery_mode pull',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ delivery_mode: 'pull' })),
      status: 400,
      says: 'body.delivery_mode',
    },
    {
      name: 'kind admin',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ kind: 'admin' })),
      status: 400,
      says: 'body.kind',
    },
    {
      name: 'push mode without a url',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: '' })),
      status: 400,
      says: 'url is required for push-mode',
    },
    {
      name: 'url is cloud metadata',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: 'http://169.254.169.254/latest' })),
      status: 400,
      says: 'body.url: resolves to 169.254.169.254, in 169.254.0.0/16 Link Local',
    },
    {
      name: 'url is loopback',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: 'http://127.0.0.1:8000' })),
      status: 400,
      says: 'loopback',
    },
    {
      name: 'url is multicast',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: 'http://224.0.0.1/' })),
      status: 400,
      says: 'Multicast',
    },
    {
      name: 'url is IPv6 link-local',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: 'http://[fe80::1]:8000/' })),
      status: 400,
      says: 'Link-Local',
    },
    {
      name: 'url is private',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: 'http://10.1.2.3:8000/' })),
      status: 400,
      says: 'private',
    },
    {
      name: 'register for an unknown workspace with a token of another',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ id: 'nobody-here' })),
      status: 403,
      says: 'token belongs to another workspace',
    },
    {
      name: 'register for an unknown workspace without a token',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ id: 'nobody-here' })),
      auth: 'none',
      status: 401,
      says: 'missing or invalid credentials',
    },
    {
      name: 'oversized body',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ agent_card: { description: big } })),
      status: 413,
      says: 'too large',
    },
    {
      name: 'text/plain body',
      method: 'POST',
      url: () => '/registry/heartbeat',
      raw: 'hello',
      contentType: 'text/plain',
      status: 415,
      says: 'Unsupported Media Type',
    },
    {
      name: 'heartbeat without workspace_id',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: () => ({ error_rate: 0 }),
      status: 400,
      says: 'body.workspace_id',
    },
    {
      name: 'error_rate above 1',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ error_rate: 2 }),
      status: 400,
      says: 'body.error_rate',
    },
    {
      name: 'error_rate is a string',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ error_rate: 'high' }),
      status: 400,
      says: 'body.error_rate',
    },
    {
      name: 'active_tasks negative',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ active_tasks: -1 }),
      status: 400,
      says: 'body.active_tasks',
    },
    {
      name: 'active_tasks fractional',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ active_tasks: 1.5 }),
      status: 400,
      says: 'body.active_tasks',
    },
    {
      name: 'runtime_state unknown',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ runtime_state: 'dead' }),
      status: 400,
      says: 'body.runtime_state',
    },
    {
      name: 'monthly_spend negative',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ monthly_spend: -5 }),
      status: 400,
      says: 'body.monthly_spend',
    },
    {
      name: 'capability not a boolean',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ runtime_metadata: { capabilities: { retry: 'yes' } } }),
      status: 400,
      says: 'body.runtime_metadata.capabilities.retry',
    },
    {
      name: 'heartbeat for an unknown workspace with a token of another',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ workspace_id: 'nobody-here' }),
      status: 403,
      says: 'token belongs to another workspace',
    },
    {
      name: 'heartbeat for an unknown workspace without a token',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ workspace_id: 'nobody-here' }),
      auth: 'none',
      status: 401,
      says: 'missing or invalid credentials',
    },
    {
      name: 'admin route without a token',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-1' }),
      auth: 'none',
      status: 401,
      says: 'admin token required',
    },
    {
      name: 'admin route with a wrong token',
      method: 'GET',
      url: () => '/workspaces',
      auth: 'wrong-admin',
      status: 401,
      says: 'admin token required',
    },
    {
      name: 'plugin name with ..',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-2', plugins: [{ name: '..', source: 'local://x' }] }),
      status: 400,
      says: 'body.plugins.0.name',
    },
    {
      name: 'plugin name with a slash',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-3', plugins: [{ name: 'a/b', source: 'local://a' }] }),
      status: 400,
      says: 'body.plugins.0.name',
    },
    {
      name: 'unknown field on create',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-4', owner: 'me' }),
      status: 400,
      says: 'owner',
    },
    {
      name: 'duplicate plugin names',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({
        id: 'fresh-5',
        plugins: [
          { name: 'a', source: 'local://a' },
          { name: 'a', source: 'local://a' },
        ],
      }),
      status: 400,
      says: 'unique',
    },
    {
      name: 'plugin source with an unknown scheme',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-6', plugins: [{ name: 'a', source: 'svn://x/a#1' }] }),
      status: 400,
      says: 'body.plugins.0.source: plugin source svn://x/a#1: unknown scheme svn://',
    },
    {
      name: 'unpinned plugin source',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-7', plugins: [{ name: 'seo', source: 'gitea://acme/seo' }] }),
      status: 400,
      says: 'unpinned',
    },
    {
      name: 'plugin name disagrees with its source',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-8', plugins: [{ name: 'seo', source: 'gitea://acme/other#main' }] }),
      status: 400,
      says: 'names the plugin other',
    },
    {
      name: 'workspace id with a space',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'has space' }),
      status: 400,
      says: 'body.id',
    },
    {
      name: 'list with an unknown status',
      method: 'GET',
      url: () => '/workspaces?status=bogus',
      status: 400,
      says: 'querystring.status',
    },
    {
      name: 'state of an unknown workspace',
      method: 'GET',
      url: () => '/workspaces/nobody-here',
      status: 404,
      says: 'unknown workspace',
    },
    {
      name: 'restart with an unknown field',
      method: 'POST',
      url: (id) => `/workspaces/${id}/restart`,
      body: () => ({ force: true }),
      status: 400,
      says: 'force',
    },
    {
      name: 'reconcile with a refresh that is not a boolean',
      method: 'POST',
      url: (id) => `/workspaces/${id}/reconcile`,
      body: () => ({ refresh: 'yes' }),
      status: 400,
      says: 'refresh',
    },
    {
      name: 'reconcile an unknown workspace',
      method: 'POST',
      url: () => '/workspaces/nobody-here/reconcile',
      body: () => ({}),
      status: 404,
      says: 'unknown workspace',
    },
    {
      name: 'dispatch-failed for an unknown workspace',
      method: 'POST',
      url: () => '/workspaces/nobody-here/dispatch-failed',
      body: () => ({}),
      status: 404,
      says: 'unknown workspace',
    },
    {
      name: 'declare plugins for an unknown workspace',
      method: 'PUT',
      url: () => '/workspaces/nobody-here/plugins',
      body: () => ({ plugins: [] }),
      status: 404,
      says: 'unknown workspace',
    },
    {
      name: 'delete an unknown workspace',
      method: 'DELETE',
      url: () => '/workspaces/nobody-here',
      status: 404,
      says: 'unknown workspace',
    },
    {
      name: 'invalid id in the path',
      method: 'POST',
      url: () => '/workspaces/bad%20id/restart',
      body: () => ({}),
      status: 400,
      says: 'params.id',
    },
    {
      name: 'a path parameter whose percent-encoding is not UTF-8 (a lone surrogate)',
      method: 'POST',
      url: () => '/workspaces/ws%ED%A0%80/restart',
      body: () => ({}),
      status: 400,
      says: 'params: a path parameter is not percent-encoded UTF-8',
    },
    {
      name: 'a path parameter past the router limit',
      method: 'GET',
      url: () => `/workspaces/${'a'.repeat(600)}`,
      status: 400,
      says: 'params: a path parameter is longer than',
    },
    {
      name: 'plugin source ending in NUL (PostgreSQL cannot store it)',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-nul', plugins: [{ name: 'seo', source: 'gitea://acme/seo#main\u0000' }] }),
      status: 400,
      says: 'body.plugins.0.source: must not contain control',
    },
    {
      name: 'git+https plugin source with NUL in its path (the URL parser keeps it)',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({
        id: 'fresh-nul-path',
        plugins: [
          {
            name: 'seo',
            source: 'git+https://plugins.example.test/ac\u0000me/seo.git#0123456789abcdef0123456789abcdef01234567',
          },
        ],
      }),
      status: 400,
      says: 'body.plugins.0.source: must not contain control',
    },
    {
      name: 'declared plugin source with an escape sequence',
      method: 'PUT',
      url: (id) => `/workspaces/${id}/plugins`,
      body: () => ({ plugins: [{ name: 'seo', source: 'gitea://acme/seo#\u001b[2Jmain' }] }),
      status: 400,
      says: 'body.plugins.0.source: must not contain control',
    },
    {
      name: 'an SSH box command holding NUL',
      method: 'PUT',
      url: (id) => `/workspaces/${id}/box`,
      body: () => ({
        driver: 'ssh',
        host: 'box.example.test',
        user: 'agent',
        key_ref: 'fleet-key',
        host_key: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHcUu9gOeOeNK4Jc8Q6kG0xB9Z9nC9ZkcdYPh6lqfA8x',
        root: '/srv/boxes/agent',
        restart_command: 'systemctl restart agent\u0000',
        running_command: 'systemctl is-active agent',
      }),
      status: 400,
      says: 'body.restart_command: must not contain control',
    },
    {
      name: 'a restart reason holding a line separator',
      method: 'POST',
      url: (id) => `/workspaces/${id}/restart`,
      body: () => ({ reason: 'disk full\u2028# Status: online' }),
      status: 400,
      says: 'body.reason: must not contain control',
    },
    {
      name: 'a dispatch-failed caller holding NUL',
      method: 'POST',
      url: (id) => `/workspaces/${id}/dispatch-failed`,
      body: () => ({ caller: 'a2a\u0000' }),
      status: 400,
      says: 'body.caller: must not contain control',
    },
    {
      name: 'register with a URL holding a control character',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: 'http://93.184.216.34:8000/\u0001' })),
      status: 400,
      says: 'body.url',
    },
    {
      name: 'register with an agent card nested past the limit',
      method: 'POST',
      url: () => '/registry/register',
      raw: `{"id": "deep-card", "agent_card": {"name": "deep", "extra": ${deep}}}`,
      status: 400,
      says: 'body.agent_card: Too deep',
    },
    {
      name: 'heartbeat with an agent card nested past the limit',
      method: 'POST',
      url: () => '/registry/heartbeat',
      raw: `{"workspace_id": "deep-card", "agent_card": {"skills": [${deep}]}}`,
      status: 400,
      says: 'body.agent_card: Too deep',
    },
  ];

  it(`has at least 30 cases (${cases.length})`, () => {
    expect(cases.length).toBeGreaterThanOrEqual(30);
  });

  it.each(cases)('$name → $status', async (c) => {
    const headers: Record<string, string> = {};
    const auth = c.auth ?? (c.url(target.id).startsWith('/registry') ? 'runtime' : 'admin');
    if (auth === 'admin') headers['authorization'] = `Bearer ${ADMIN}`;
    if (auth === 'wrong-admin') headers['authorization'] = 'Bearer definitely-not-the-admin-token';
    if (auth === 'runtime') headers['authorization'] = `Bearer ${target.token}`;
    if (c.contentType) headers['content-type'] = c.contentType;
    else if (c.raw !== undefined) headers['content-type'] = 'application/json';

    const signalsBefore = await signalsReceived(target.id);
    const rowsBefore = await rowCounts();
    const res = await api.inject({
      method: c.method,
      url: c.url(target.id),
      headers,
      ...(c.raw !== undefined ? { payload: c.raw } : c.body ? { payload: c.body(target.id) as object } : {}),
    });
    expect(res.statusCode, res.body).toBe(c.status);
    const body = res.json<{ error: string; issues?: { field: string; problem: string }[] }>();
    const said = [body.error, ...(body.issues ?? []).map((i) => `${i.field}: ${i.problem}`)].join(' | ');
    expect(said).toContain(c.says);
    // One shape for every 400: the error and at least one named field with its problem.
    if (c.status === 400) {
      expect(body.issues?.length, res.body).toBeGreaterThan(0);
      for (const issue of body.issues ?? []) expect(issue.field).toMatch(/^(body|params|querystring)\b/);
    }
    expect(await signalsReceived(target.id)).toBe(signalsBefore);
    expect(await rowCounts()).toBe(rowsBefore);
  });
});

describe('operations', () => {
  it('healthz, readyz and metrics answer', async () => {
    expect((await api.inject({ method: 'GET', url: '/healthz' })).json()).toEqual({ status: 'ok' });
    const ready = await api.inject({ method: 'GET', url: '/readyz' });
    expect(ready.statusCode).toBe(200);
    expect(ready.json()).toEqual({ temporal: 'ok', database: 'ok' });
    const metrics = await api.inject({ method: 'GET', url: '/metrics' });
    expect(metrics.body).toMatch(/http_requests_total\{method="GET",route="\/readyz",status="200"\} \d+/);
    expect(metrics.body).toContain('http_request_duration_seconds_bucket');
  });

  it('the OpenAPI document is served and lists every route', async () => {
    const doc = (await api.inject({ method: 'GET', url: '/openapi.json' })).json<{
      openapi: string;
      paths: Record<string, Record<string, unknown>>;
    }>();
    expect(doc.openapi).toMatch(/^3\./);
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`),
    );
    expect(documented.sort()).toEqual(
      [
        'POST /registry/register',
        'POST /registry/heartbeat',
        'POST /workspaces',
        'GET /workspaces',
        'GET /workspaces/{id}',
        'PUT /workspaces/{id}/plugins',
        'POST /workspaces/{id}/restart',
        'POST /workspaces/{id}/reconcile',
        'PUT /workspaces/{id}/box',
        'POST /workspaces/{id}/dispatch-failed',
        'DELETE /workspaces/{id}',
        'GET /healthz',
        'GET /readyz',
      ].sort(),
    );
  });
});

describe('Temporal unavailable', () => {
  it('answers 503 with Retry-After, never 200, when Temporal is stopped', async () => {
    const { id, token } = await createWorkspace();
    const doomed = await createTimeSkippingEnv();
    const isolated = await buildApi(doomed.client, store, settings({ temporalTimeoutMs: 2_000 }));
    await doomed.teardown();
    try {
      const res = await isolated.inject({
        method: 'POST',
        url: '/registry/heartbeat',
        headers: { authorization: `Bearer ${token}` },
        payload: heartbeatPayload(id),
      });
      expect(res.statusCode, res.body).toBe(503);
      expect(res.headers['retry-after']).toBe('5');
      expect(res.json<{ error: string }>().error).toMatch(/^Temporal unavailable/);
      const ready = await isolated.inject({ method: 'GET', url: '/readyz' });
      expect(ready.statusCode).toBe(503);
      expect(ready.json()).toMatchObject({ database: 'ok', temporal: expect.stringMatching(/^unavailable/) as string });
      expect((await state(id)).counters.heartbeats).toBe(0);
    } finally {
      await isolated.close();
    }
  });
});

describe('a status means what it says', () => {
  it('a query on a workflow whose tasks fail is 502 (Temporal answered with an error), not "unavailable"', async () => {
    const id = uniqueId('api-broken');
    await ensureWorkspace(store, id);
    // A workflow type the worker does not know: every workflow task of it fails.
    await env.client.workflow.start('noSuchWorkflowType', { taskQueue, workflowId: workspaceWorkflowId(id) });
    try {
      const res = await api.inject({ method: 'GET', url: `/workspaces/${id}`, headers: admin });
      expect(res.statusCode, res.body).toBe(502);
      expect(res.json<{ error: string }>().error).toMatch(/^Temporal answered, but workflow .* task is failing/);
      expect(res.headers['retry-after']).toBeUndefined();
    } finally {
      await env.client.workflow.getHandle(workspaceWorkflowId(id)).terminate('test done');
    }
  });
});

describe('no worker', () => {
  it('a register without delivery_mode needs no worker: the stored mode comes from the database', async () => {
    // A task queue no worker polls: signals wait in Temporal, queries would time out.
    const idle = await buildApi(
      env.client,
      store,
      settings({ taskQueue: uniqueId('no-worker'), temporalTimeoutMs: 2_000 }),
    );
    try {
      const id = uniqueId('api-noworker');
      const created = await idle.inject({ method: 'POST', url: '/workspaces', headers: admin, payload: { id } });
      expect(created.statusCode, created.body).toBe(201);
      const token = created.json<{ auth_token: string }>().auth_token;
      const body = registerBody(id);
      delete body['delivery_mode'];
      const reg = await idle.inject({
        method: 'POST',
        url: '/registry/register',
        headers: { authorization: `Bearer ${token}` },
        payload: body,
      });
      expect(reg.statusCode, reg.body).toBe(200);
      expect(reg.json()).toEqual({ status: 'registered', delivery_mode: 'push' });
      await env.client.workflow.getHandle(workspaceWorkflowId(id)).terminate('test done');
    } finally {
      await idle.close();
    }
  });
});

describe('overload and a database that is down', () => {
  it('past its admission limit the API refuses at once with 429 and Retry-After; what it accepted arrives', async () => {
    const { id, token } = await createWorkspace();
    const limited = await buildApi(
      env.client,
      store,
      settings({
        admission: {
          ...defaultAdmissionSettings,
          maxInFlight: 2,
          maxQueued: 1,
          maxQueueWaitMs: 5_000,
          targetLatencyMs: 60_000,
        },
      }),
    );
    try {
      const answers = await Promise.all(
        Array.from({ length: 12 }, () =>
          limited.inject({
            method: 'POST',
            url: '/registry/heartbeat',
            headers: { authorization: `Bearer ${token}` },
            payload: heartbeatPayload(id),
          }),
        ),
      );
      const accepted = answers.filter((a) => a.statusCode === 200).length;
      const refused = answers.filter((a) => a.statusCode === 429);
      expect(accepted).toBe(3); // two in flight and one queued
      expect(refused).toHaveLength(9);
      for (const r of refused) {
        expect(r.headers['retry-after']).toBe('1');
        expect(r.json<{ error: string }>().error).toMatch(/^overloaded: too many calls in flight/);
      }
      // Every accepted heartbeat is in the ledger, forwarded or not.
      expect((await store.heartbeats.read(id)).beats).toBe(accepted);
      const metrics = await limited.inject({ method: 'GET', url: '/metrics' });
      expect(metrics.body).toContain('api_admission_refused{reason="queue_full"} 9');
    } finally {
      await limited.close();
    }
  });

  it('a database that is down is 503 with Retry-After at once, and readyz names it', async () => {
    const { id, token } = await createWorkspace();
    const nowhere = Store.connect('postgres://postgres@127.0.0.1:1/none', { connectTimeoutMs: 500 });
    const isolated = await buildApi(env.client, nowhere, settings());
    try {
      const started = Date.now();
      const res = await isolated.inject({
        method: 'POST',
        url: '/registry/heartbeat',
        headers: { authorization: `Bearer ${token}` },
        payload: heartbeatPayload(id),
      });
      expect(res.statusCode, res.body).toBe(503);
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(res.headers['retry-after']).toBe('5');
      expect(res.json<{ error: string }>().error).toMatch(/^database unavailable/);
      const ready = await isolated.inject({ method: 'GET', url: '/readyz' });
      expect(ready.statusCode).toBe(503);
      expect(ready.json()).toMatchObject({ temporal: 'ok', database: expect.stringMatching(/^unavailable/) as string });
      expect((await state(id)).counters.heartbeats).toBe(0);
    } finally {
      await isolated.close();
      await nowhere.close();
    }
  });
});

/** A workspace created through the API, its workflow then terminated by an operator. */
async function terminatedWorkspace(initialStatus: 'provisioning' | 'awaiting_agent'): Promise<{
  id: string;
  bearer: { authorization: string };
}> {
  const id = uniqueId('relay');
  const created = await api.inject({
    method: 'POST',
    url: '/workspaces',
    headers: admin,
    payload: { id, plugins: [], initial_status: initialStatus },
  });
  expect(created.statusCode, created.body).toBe(201);
  const handle = env.client.workflow.getHandle(workspaceWorkflowId(id));
  await waitForState(handle, (s) => s.status === initialStatus);
  await handle.terminate('operator: start it over');
  return { id, bearer: { authorization: `Bearer ${created.json<{ auth_token: string }>().auth_token}` } };
}

/** A runtime's call with its token; the API answers 200. */
async function runtimeCall(url: string, bearer: { authorization: string }, payload: object): Promise<unknown> {
  const res = await api.inject({ method: 'POST', url, headers: bearer, payload });
  expect(res.statusCode, res.body).toBe(200);
  return res.json();
}

// A runtime's call reaches its workspace's workflow as a signal (api/relay.ts); with no run open
// (an operator terminated it), signal-with-start starts one as the database describes the workspace.
describe('a workflow recreated by a runtime call', () => {
  it('keeps an external runtime external, by the register that recreates it: polled, never reconciled', async () => {
    const { id, bearer } = await terminatedWorkspace('awaiting_agent');
    const answer = await runtimeCall('/registry/register', bearer, { id, agent_card: { name: 'outside' } });
    expect(answer).toEqual({ status: 'registered', delivery_mode: 'poll' });
    const handle = env.client.workflow.getHandle(workspaceWorkflowId(id));
    const state = await waitForState(handle, (s) => s.status === 'online');
    expect(state).toMatchObject({ runtime: 'external', deliveryMode: 'poll' });
    expect(state.counters.reconcilesStarted).toBe(0);
  });

  it.each([
    ['awaiting_agent', 'external', 0],
    ['provisioning', 'managed', 1],
  ] as const)(
    'a workspace created %s stays %s, by the heartbeat that recreates it',
    async (initial, runtime, passes) => {
      const { id, bearer } = await terminatedWorkspace(initial);
      await runtimeCall('/registry/heartbeat', bearer, heartbeatPayload(id));
      const handle = env.client.workflow.getHandle(workspaceWorkflowId(id));
      const state = await waitForState(handle, (s) => s.status === 'online' && !s.reconcile.running);
      expect(state.runtime).toBe(runtime);
      // Coming online reconciles a managed workspace's plugins; nothing is delivered to an external one.
      expect(state.counters.reconcilesStarted).toBe(passes);
    },
  );
});

/** `target` with every method call, its tables' too, pushed to `reached` by name (`tokens.owner`). */
function recordingProxy<T extends object>(target: T, prefix: string, reached: string[]): T {
  return new Proxy(target, {
    get(object, property, receiver) {
      const value: unknown = Reflect.get(object, property, receiver);
      const name = `${prefix}${String(property)}`;
      if (typeof value === 'function') {
        return (...args: unknown[]) => {
          reached.push(name);
          return (value as (...a: unknown[]) => unknown).apply(object, args);
        };
      }
      return typeof value === 'object' && value !== null ? recordingProxy(value, `${name}.`, reached) : value;
    },
  });
}
