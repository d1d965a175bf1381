/**
 * The management routes (api/routes/workspaces.ts): create, read, declared plugins, restart,
 * reconcile, dispatch-failed and delete, against the real time-skipping Temporal server, a real
 * worker (mocked box activities) and real PostgreSQL.
 */
import { describe, expect, it } from 'vitest';
import { buildApi, defaultApiSettings } from '../../api/server.js';
import { newInstanceToken } from '../../api/tokens.js';
import { workspaceWorkflowId } from '../../workflows/definitions.js';
import { admin, registerBody, useApiHarness } from '../helpers/api.js';
import { ensureWorkspace } from '../helpers/postgres.js';
import { uniqueId, waitForState } from '../helpers/worker.js';

// A database of its own: its tests assert that no row was written anywhere.
const harness = useApiHarness('workspaces-tests', { database: 'api_workspaces' });

describe('workspace management', () => {
  it('restart, declared plugins and dispatch-failed verdicts reach the workflow', async () => {
    const { id, token } = await harness.createWorkspace();
    await harness.api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: { authorization: `Bearer ${token}` },
      payload: registerBody(id),
    });
    const handle = harness.env.client.workflow.getHandle(workspaceWorkflowId(id));
    await waitForState(handle, (s) => s.status === 'online' && !s.reconcile.running);

    const put = await harness.api.inject({
      method: 'PUT',
      url: `/workspaces/${id}/plugins`,
      headers: admin,
      payload: { plugins: [{ name: 'writer', source: 'github://acme/writer#v1' }] },
    });
    expect(put.statusCode, put.body).toBe(202);
    expect(await harness.store.declaredPlugins.list(id)).toEqual([
      { name: 'writer', source: 'github://acme/writer#v1' },
    ]);
    await waitForState(handle, (s) => s.counters.reconcilesStarted === 2 && !s.reconcile.running);
    expect(harness.fake.reconcileCalls.filter((c) => c.workspaceId === id).at(-1)?.trigger).toBe('plugins declared');

    const verdicts = await harness.metric('workspace_dispatch_verdicts_total', { verdict: 'alive' });
    const alive = await harness.api.inject({
      method: 'POST',
      url: `/workspaces/${id}/dispatch-failed`,
      headers: admin,
      payload: {},
    });
    expect(alive.statusCode, alive.body).toBe(200);
    expect(alive.json()).toEqual({ verdict: 'alive', detail: 'the box is running' });
    expect(await harness.metric('workspace_dispatch_verdicts_total', { verdict: 'alive' })).toBe(verdicts + 1);

    const restart = await harness.api.inject({
      method: 'POST',
      url: `/workspaces/${id}/restart`,
      headers: admin,
      payload: { reason: 'rotate' },
    });
    expect(restart.statusCode, restart.body).toBe(200);
    expect(restart.json()).toEqual({ outcome: 'started', detail: 'restart 1' });
    const s = await waitForState(handle, (x) => x.restart.count === 1 && !x.restart.inFlight);
    expect(s.restart).toMatchObject({ lastReason: 'rotate', lastRequester: 'operator' });

    // An operator's reconcile: verify by default, refresh on request; the workflow runs it.
    const passes = s.counters.reconcilesRequested;
    for (const [payload, mode] of [
      [{}, 'verify'],
      [{ refresh: true }, 'refresh'],
    ] as const) {
      const res = await harness.api.inject({
        method: 'POST',
        url: `/workspaces/${id}/reconcile`,
        headers: admin,
        payload,
      });
      expect(res.statusCode, res.body).toBe(200);
      // The verify pass starts; the refresh starts too, or follows the verify pass if it still runs.
      expect([
        { outcome: 'started', detail: `a ${mode} pass` },
        { outcome: 'merged', detail: 'into the pass running: one more pass follows it' },
      ]).toContainEqual(res.json());
      if (mode === 'verify') expect(res.json()).toMatchObject({ outcome: 'started' });
    }
    const after = await waitForState(handle, (x) => x.counters.reconcilesRequested === passes + 2);
    expect(after.reconcile.lastVerifyAt).not.toBeNull();
  });

  it('cordon and uncordon answer what they did', async () => {
    const { id } = await harness.createWorkspace();
    const handle = harness.env.client.workflow.getHandle(workspaceWorkflowId(id));
    const post = (what: string, payload?: object) =>
      harness.api.inject({ method: 'POST', url: `/workspaces/${id}/${what}`, headers: admin, payload: payload ?? {} });
    const cordon = await post('cordon', { reason: 'incident 7' });
    expect(cordon.statusCode, cordon.body).toBe(200);
    expect(cordon.json()).toEqual({
      outcome: 'started',
      detail: 'cordoned: automatic restarts and plugin deliveries are held until uncordon',
    });
    const state = await waitForState(handle, (s) => s.cordon !== null);
    expect(state.cordon).toMatchObject({ reason: 'incident 7', requester: 'operator' });
    // The projection carries it to the fleet's gauge (read at most every 10 s).
    const cordoned = async (): Promise<boolean | undefined> =>
      (await harness.store.pool.query<{ cordoned: boolean }>('SELECT cordoned FROM workspaces WHERE id = $1', [id]))
        .rows[0]?.cordoned;
    await expect.poll(cordoned).toBe(true);
    await expect
      .poll(() => harness.metric('workspaces_cordoned'), { timeout: 15_000, interval: 500 })
      .toBeGreaterThanOrEqual(1);
    expect((await post('cordon')).json()).toMatchObject({ outcome: 'merged' });
    const uncordon = await post('uncordon');
    expect(uncordon.statusCode, uncordon.body).toBe(200);
    expect(uncordon.json()).toEqual({ outcome: 'started', detail: 'uncordoned: nothing was held' });
    await expect.poll(cordoned).toBe(false);
    expect((await post('uncordon')).json()).toEqual({ outcome: 'merged', detail: 'not cordoned' });
  });

  it('a create writes its row, its plugins and one live token together; one a constraint refuses writes none', async () => {
    const plugins = [
      { name: 'seo', source: 'gitea://acme/seo#main' },
      { name: 'lint', source: 'local://lint' },
    ];
    const { id } = await harness.createWorkspace(plugins);
    expect(await harness.store.tokens.liveCount(id)).toBe(1);
    expect(await harness.store.declaredPlugins.list(id)).toEqual(expect.arrayContaining(plugins));

    const before = await harness.rowCounts();
    const refused = `${id}-refused`;
    const token = newInstanceToken().stored;
    // A plugin name the table's check refuses (the API's schema refuses it first).
    const bad = [...plugins, { name: '../escape', source: 'local://x' }];
    await expect(harness.store.workspaces.create(refused, bad, false, token)).rejects.toThrow(/check constraint/);
    expect(await harness.store.workspaces.access(refused)).toBeNull();
    // The id taken: nothing written either, the first token still the only one.
    expect(await harness.store.workspaces.create(id, [], false, newInstanceToken().stored)).toBe(false);
    expect(await harness.rowCounts()).toBe(before);
    expect(await harness.store.tokens.liveCount(id)).toBe(1);
  });

  it('a workspace id of the longest valid length (128) is reachable at its path', async () => {
    const id = `${'a'.repeat(120)}-${process.pid % 10_000_000}`.slice(0, 128).padEnd(128, 'b');
    const created = await harness.api.inject({ method: 'POST', url: '/workspaces', headers: admin, payload: { id } });
    expect(created.statusCode, created.body).toBe(201);
    const view = await harness.api.inject({ method: 'GET', url: `/workspaces/${id}`, headers: admin });
    expect(view.statusCode, view.body).toBe(200);
    const removed = await harness.api.inject({ method: 'DELETE', url: `/workspaces/${id}`, headers: admin });
    expect(removed.statusCode, removed.body).toBe(202);
  });

  it('a duplicate workspace id is 409 and writes nothing', async () => {
    const { id } = await harness.createWorkspace();
    const before = await harness.rowCounts();
    const res = await harness.api.inject({ method: 'POST', url: '/workspaces', headers: admin, payload: { id } });
    expect(res.statusCode).toBe(409);
    expect(await harness.rowCounts()).toBe(before);
  });
});

describe('a status means what it says', () => {
  it('a query on a workflow whose tasks fail is 502 (Temporal answered with an error), not "unavailable"', async () => {
    const id = uniqueId('api-broken');
    await ensureWorkspace(harness.store, id);
    // A workflow type the worker does not know: every workflow task of it fails.
    await harness.env.client.workflow.start('noSuchWorkflowType', {
      taskQueue: harness.taskQueue,
      workflowId: workspaceWorkflowId(id),
    });
    // The query waits out its deadline before a describe tells why: the service's own deadline here.
    const api = await buildApi(
      harness.env.client,
      harness.store,
      harness.settings({ temporalTimeoutMs: defaultApiSettings.temporalTimeoutMs }),
    );
    try {
      const res = await api.inject({ method: 'GET', url: `/workspaces/${id}`, headers: admin });
      expect(res.statusCode, res.body).toBe(502);
      expect(res.json<{ error: string }>().error).toMatch(/^Temporal answered, but workflow .* task is failing/);
      expect(res.headers['retry-after']).toBeUndefined();
    } finally {
      await api.close();
      await harness.env.client.workflow.getHandle(workspaceWorkflowId(id)).terminate('test done');
    }
  });
});
