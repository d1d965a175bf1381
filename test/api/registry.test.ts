/**
 * The runtime's routes (api/routes/registry.ts: register and heartbeat) against the real
 * time-skipping Temporal server, a real worker (mocked box activities) and real PostgreSQL,
 * through Fastify's in-process injection: the runtime flow, bootstrap tokens, the heartbeat
 * ledger and its forwards, authentication, unknown and removed workspaces, and a workflow
 * recreated by a runtime's call.
 */
import { describe, expect, it } from 'vitest';
import { buildApi } from '../../api/server.js';
import { REVOKED_TOKEN, UNAUTHENTICATED } from '../../api/tokens.js';
import { workspaceWorkflowId } from '../../workflows/definitions.js';
import type { WorkspaceState } from '../../workflows/state-machine.js';
import { admin, agentUrl, registerBody, useApiHarness } from '../helpers/api.js';
import { heartbeatPayload } from '../helpers/payloads.js';
import { ensureWorkspace, giveBootCredential, readProjection } from '../helpers/postgres.js';
import { uniqueId, waitForState } from '../helpers/worker.js';

const harness = useApiHarness('registry-tests');

describe('runtime endpoints', () => {
  it('create, register with the issued token, heartbeat: the register reaches the workflow, the heartbeat is counted', async () => {
    const { id, token } = await harness.createWorkspace([{ name: 'seo', source: 'gitea://acme/seo#main' }]);
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(await harness.store.declaredPlugins.list(id)).toEqual([{ name: 'seo', source: 'gitea://acme/seo#main' }]);
    const bearer = { authorization: `Bearer ${token}` };

    const reg = await harness.api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: bearer,
      payload: registerBody(id),
    });
    expect(reg.statusCode, reg.body).toBe(200);
    expect(reg.json()).toEqual({ status: 'registered', delivery_mode: 'push' }); // a live token exists: none issued
    const hb = await harness.api.inject({
      method: 'POST',
      url: '/registry/heartbeat',
      headers: bearer,
      payload: heartbeatPayload(id),
    });
    expect(hb.statusCode, hb.body).toBe(200);
    expect(hb.json()).toEqual({ status: 'ok' });

    const handle = harness.env.client.workflow.getHandle(workspaceWorkflowId(id));
    const s = await waitForState(handle, (x) => x.counters.registers === 1);
    expect(s).toMatchObject({ status: 'online', url: new URL(agentUrl).href }); // stored normalised
    const got = await harness.api.inject({ method: 'GET', url: `/workspaces/${id}`, headers: admin });
    expect(got.statusCode).toBe(200);
    // Forwarded or only recorded, the heartbeat is in the ledger.
    const view = got.json<WorkspaceState & { heartbeatLedger: { beats: number } }>();
    expect(view).toMatchObject({ workspaceId: id, status: 'online' });
    expect(view.heartbeatLedger.beats).toBe(1);
    await expect.poll(async () => (await readProjection(harness.store, id))?.status).toBe('online');
    const list = await harness.api.inject({
      method: 'GET',
      url: '/workspaces?status=online&limit=1000',
      headers: admin,
    });
    expect(list.json<{ workspaces: { id: string }[] }>().workspaces.map((w) => w.id)).toContain(id);
  });

  it('bootstrap: a workspace without a live token registers with its boot credential and gets one, shown once', async () => {
    const id = uniqueId('api-boot');
    await ensureWorkspace(harness.store, id);
    const tokenless = await harness.api.inject({
      method: 'POST',
      url: '/registry/register',
      payload: registerBody(id),
    });
    expect(tokenless.statusCode, tokenless.body).toBe(401);
    const credential = await giveBootCredential(harness.store, id);
    const first = await harness.api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: { 'x-boot-credential': credential },
      payload: registerBody(id),
    });
    expect(first.statusCode, first.body).toBe(200);
    const token = first.json<{ auth_token?: string }>().auth_token;
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // From now on the bearer is required.
    const anonymous = await harness.api.inject({
      method: 'POST',
      url: '/registry/heartbeat',
      payload: heartbeatPayload(id),
    });
    expect(anonymous.statusCode).toBe(401);
    const again = await harness.api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: { authorization: `Bearer ${token ?? ''}` },
      payload: registerBody(id),
    });
    expect(again.json()).toEqual({ status: 'registered', delivery_mode: 'push' });
    // Only the hash is stored.
    const { rows } = await harness.store.pool.query<{ token_hash: Buffer; prefix: string }>(
      'SELECT token_hash, prefix FROM workspace_tokens WHERE workspace_id = $1',
      [id],
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]?.prefix).toBe(token?.slice(0, 8));
    expect(rows[0]?.token_hash.toString('base64url')).not.toBe(token);
  });

  it('a poll-mode workspace re-registers without a url or delivery_mode: its stored mode applies', async () => {
    const { id, token } = await harness.createWorkspace();
    const bearer = { authorization: `Bearer ${token}` };
    const poll = { id, agent_card: { name: 'poller' }, delivery_mode: 'poll' };
    const first = await harness.api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: bearer,
      payload: poll,
    });
    expect(first.json()).toEqual({ status: 'registered', delivery_mode: 'poll' });
    await waitForState(
      harness.env.client.workflow.getHandle(workspaceWorkflowId(id)),
      (s) => s.deliveryMode === 'poll',
    );
    // The API reads the stored mode from the projection the workflow writes (no worker needed).
    await expect.poll(async () => (await harness.store.workspaces.access(id))?.deliveryMode).toBe('poll');
    const again = await harness.api.inject({
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
    const created = await harness.api.inject({
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
    const reg = await harness.api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: bearer,
      payload: { id, agent_card: { name: 'outside' } },
    });
    expect(reg.statusCode, reg.body).toBe(200);
    expect(reg.json()).toEqual({ status: 'registered', delivery_mode: 'poll' });
    const handle = harness.env.client.workflow.getHandle(workspaceWorkflowId(id));
    await waitForState(handle, (s) => s.status === 'online');

    const restart = await harness.api.inject({
      method: 'POST',
      url: `/workspaces/${id}/restart`,
      headers: admin,
      payload: {},
    });
    expect(restart.statusCode, restart.body).toBe(409);
    expect(restart.json()).toEqual({ error: `workspace ${id} runs an external runtime: restart it where it runs` });
    const reconcile = await harness.api.inject({
      method: 'POST',
      url: `/workspaces/${id}/reconcile`,
      headers: admin,
      payload: { refresh: true },
    });
    expect(reconcile.statusCode, reconcile.body).toBe(409);
    expect(reconcile.json()).toEqual({ error: `workspace ${id} runs an external runtime: it loads its own plugins` });
    const verdict = await harness.api.inject({
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
    const s = await harness.state(id);
    expect(s).toMatchObject({ runtime: 'external', deliveryMode: 'poll', status: 'online' });
    expect(s.counters.reconcilesStarted).toBe(0);
    expect(s.restart.count).toBe(0);
    expect(harness.fake.probes.filter((p) => p === id)).toEqual([]);
    expect(harness.fake.reconcileCalls.filter((c) => c.workspaceId === id)).toEqual([]);
    expect(await harness.store.tokens.liveCount(id)).toBe(1);
  });

  it('a heartbeat the workflow does not want is recorded and answered at once; one it wants is forwarded, answered once Temporal has it', async () => {
    const { id, bearer, handle } = await harness.registeredOnline();
    const beat = async (overrides: Record<string, unknown> = {}): Promise<void> => {
      const res = await harness.api.inject({
        method: 'POST',
        url: '/registry/heartbeat',
        headers: bearer,
        payload: heartbeatPayload(id, overrides),
      });
      expect(res.statusCode, res.body).toBe(200);
    };
    // Online, the workflow wants a heartbeat that degrades it: the healthy ones are only recorded.
    await expect.poll(async () => (await harness.store.heartbeats.read(id)).want).toBe('degrading');
    const signalsBefore = await harness.signalsReceived(id);
    for (let i = 0; i < 6; i++) await beat({ error_rate: 0.01 * i, uptime_seconds: i });
    expect(await harness.signalsReceived(id)).toBe(signalsBefore);
    expect((await harness.store.heartbeats.read(id)).beats).toBe(6);

    // A degrading heartbeat is forwarded: answered once Temporal has it, then recorded.
    await beat({ error_rate: 0.9 });
    expect(await harness.signalsReceived(id)).toBe(signalsBefore + 1);
    const degraded = await waitForState(handle, (s) => s.status === 'degraded');
    expect(degraded.counters.heartbeats).toBe(1);
    expect(degraded.lastHeartbeat?.errorRate).toBe(0.9);
    expect((await harness.store.heartbeats.read(id)).beats).toBe(7);

    // Degraded, it wants one that recovers: another degrading one is only recorded.
    await expect.poll(async () => (await harness.store.heartbeats.read(id)).want).toBe('recovering');
    await beat({ error_rate: 0.9 });
    expect(await harness.signalsReceived(id)).toBe(signalsBefore + 1);
    await beat({ error_rate: 0 });
    expect((await waitForState(handle, (s) => s.status === 'online')).counters.heartbeats).toBe(2);

    // What an operator reads: every acknowledged heartbeat in the ledger, and what the workflow wants.
    const read = await harness.api.inject({ method: 'GET', url: `/workspaces/${id}`, headers: admin });
    const body = read.json<WorkspaceState & { heartbeatLedger: { lastSeenAt: string; beats: number } }>();
    expect(body.heartbeatLedger.beats).toBe(9);
    expect(Date.now() - Date.parse(body.heartbeatLedger.lastSeenAt)).toBeLessThan(10_000);
  });

  it('auth: none or a wrong token is 401; a token of another workspace is 403', async () => {
    const a = await harness.createWorkspace();
    const b = await harness.createWorkspace();
    const heartbeat = (headers: Record<string, string>): Promise<number> =>
      harness.api
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
    const live = await harness.createWorkspace();
    const revoked = await harness.createWorkspace();
    await harness.store.tokens.revoke(revoked.id);
    await giveBootCredential(harness.store, revoked.id);
    const removed = await harness.createWorkspace();
    expect(
      (await harness.api.inject({ method: 'DELETE', url: `/workspaces/${removed.id}`, headers: admin })).statusCode,
    ).toBe(202);
    const ids = [uniqueId('api-nobody'), live.id, revoked.id, removed.id];
    // Which store methods each call reaches (`table.method`), through an API of its own over a recording store.
    const reached: string[] = [];
    const recording = recordingProxy(harness.store, '', reached);
    const watched = await buildApi(harness.env.client, recording, harness.settings());
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
    const a = await harness.createWorkspace();
    const b = await harness.createWorkspace();
    const bearer = { authorization: `Bearer ${a.token}` };
    const answers = new Set<string>();
    for (const id of [b.id, uniqueId('api-nobody')]) {
      const hb = await harness.api.inject({
        method: 'POST',
        url: '/registry/heartbeat',
        headers: bearer,
        payload: heartbeatPayload(id),
      });
      const reg = await harness.api.inject({
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
    const { id, token } = await harness.createWorkspace();
    harness.fake.probeScript.set(id, ['not-running']);
    await harness.api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: { authorization: `Bearer ${token}` },
      payload: registerBody(id),
    });
    await waitForState(harness.env.client.workflow.getHandle(workspaceWorkflowId(id)), (s) => s.status === 'online');
    const res = await harness.api.inject({
      method: 'POST',
      url: `/workspaces/${id}/dispatch-failed`,
      headers: admin,
      payload: { caller: 'a2a' },
    });
    expect(res.statusCode, res.body).toBe(503);
    expect(res.headers['retry-after']).toBe('15');
    expect(res.json()).toMatchObject({ verdict: 'dead' });
    await expect.poll(() => harness.store.tokens.liveCount(id)).toBe(0);

    // Bootstrap is for a register only: a heartbeat with the revoked token, or with none, is 401
    // and never reaches the workflow. The revoked token's holder is told it was revoked.
    const heartbeatsBefore = (await harness.state(id)).counters.heartbeats;
    const answers: [Record<string, string>, string][] = [
      [{ authorization: `Bearer ${token}` }, REVOKED_TOKEN],
      [{}, UNAUTHENTICATED],
    ];
    for (const [headers, error] of answers) {
      const hb = await harness.api.inject({
        method: 'POST',
        url: '/registry/heartbeat',
        headers,
        payload: heartbeatPayload(id),
      });
      expect(hb.statusCode, hb.body).toBe(401);
      expect(hb.json()).toEqual({ error });
    }
    expect((await harness.state(id)).counters.heartbeats).toBe(heartbeatsBefore);

    // The old token no longer counts, and neither does a register without a credential: the
    // restarted runtime registers with the boot credential its box was started with, and gets a new token.
    for (const [headers, error] of answers) {
      const refused = await harness.api.inject({
        method: 'POST',
        url: '/registry/register',
        headers,
        payload: registerBody(id),
      });
      expect(refused.statusCode, refused.body).toBe(401);
      expect(refused.json()).toEqual({ error });
    }
    const reg = await harness.api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: { 'x-boot-credential': await giveBootCredential(harness.store, id) },
      payload: registerBody(id),
    });
    expect(reg.statusCode, reg.body).toBe(200);
    const fresh = reg.json<{ auth_token?: string }>().auth_token;
    expect(fresh).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(fresh).not.toBe(token);
    expect(await harness.store.tokens.liveCount(id)).toBe(1);
    // A late retry of that verdict's revocation leaves the token minted after it alone.
    const verdictAt = (await harness.state(id)).deadDetection.lastVerdict?.at ?? '';
    expect(await harness.store.tokens.revoke(id, verdictAt)).toBe(0);
    expect(await harness.store.tokens.liveCount(id)).toBe(1);
  });

  it('heartbeat and register for an unknown workspace are 401, for a removed one 404 to its own token, and start nothing', async () => {
    const unknown = uniqueId('api-unknown');
    const hb = await harness.api.inject({
      method: 'POST',
      url: '/registry/heartbeat',
      payload: heartbeatPayload(unknown),
    });
    expect(hb.statusCode).toBe(401);
    expect(hb.json()).toEqual({ error: UNAUTHENTICATED });
    await expect(harness.env.client.workflow.getHandle(workspaceWorkflowId(unknown)).describe()).rejects.toThrow();

    const { id, token } = await harness.createWorkspace();
    const del = await harness.api.inject({ method: 'DELETE', url: `/workspaces/${id}`, headers: admin });
    expect(del.statusCode).toBe(202);
    // Removed from the moment the DELETE was answered: no window while the workflow winds down.
    const bearer = { authorization: `Bearer ${token}` };
    const [hbAtOnce, regAtOnce, restartAtOnce] = await Promise.all([
      harness.api.inject({
        method: 'POST',
        url: '/registry/heartbeat',
        headers: bearer,
        payload: heartbeatPayload(id),
      }),
      harness.api.inject({ method: 'POST', url: '/registry/register', headers: bearer, payload: registerBody(id) }),
      harness.api.inject({ method: 'POST', url: `/workspaces/${id}/restart`, headers: admin, payload: {} }),
    ]);
    expect([hbAtOnce.statusCode, regAtOnce.statusCode, restartAtOnce.statusCode]).toEqual([404, 404, 404]);
    expect(hbAtOnce.json()).toEqual({ error: `workspace ${id} is removed` });
    await harness.env.client.workflow.getHandle(workspaceWorkflowId(id)).result();
    expect((await readProjection(harness.store, id))?.status).toBe('removed');
    const late = await harness.api.inject({
      method: 'POST',
      url: '/registry/heartbeat',
      headers: { authorization: `Bearer ${token}` },
      payload: heartbeatPayload(id),
    });
    expect(late.statusCode).toBe(404);
    expect(late.json()).toEqual({ error: `workspace ${id} is removed` });
  });
});

describe('no worker', () => {
  it('a register without delivery_mode needs no worker: the stored mode comes from the database', async () => {
    // A task queue no worker polls: signals wait in Temporal, queries would time out.
    const idle = await buildApi(
      harness.env.client,
      harness.store,
      harness.settings({ taskQueue: uniqueId('no-worker'), temporalTimeoutMs: 2_000 }),
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
      await harness.env.client.workflow.getHandle(workspaceWorkflowId(id)).terminate('test done');
    } finally {
      await idle.close();
    }
  });
});

/** A workspace created through the API, its workflow then terminated by an operator. */
async function terminatedWorkspace(initialStatus: 'provisioning' | 'awaiting_agent'): Promise<{
  id: string;
  bearer: { authorization: string };
}> {
  const id = uniqueId('relay');
  const created = await harness.api.inject({
    method: 'POST',
    url: '/workspaces',
    headers: admin,
    payload: { id, plugins: [], initial_status: initialStatus },
  });
  expect(created.statusCode, created.body).toBe(201);
  const handle = harness.env.client.workflow.getHandle(workspaceWorkflowId(id));
  await waitForState(handle, (s) => s.status === initialStatus);
  await handle.terminate('operator: start it over');
  return { id, bearer: { authorization: `Bearer ${created.json<{ auth_token: string }>().auth_token}` } };
}

/** A runtime's call with its token; the API answers 200. */
async function runtimeCall(url: string, bearer: { authorization: string }, payload: object): Promise<unknown> {
  const res = await harness.api.inject({ method: 'POST', url, headers: bearer, payload });
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
    const handle = harness.env.client.workflow.getHandle(workspaceWorkflowId(id));
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
      const handle = harness.env.client.workflow.getHandle(workspaceWorkflowId(id));
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
