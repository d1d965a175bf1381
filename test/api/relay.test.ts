/**
 * A runtime's call reaches its workspace's workflow with signal-with-start (api/relay.ts): when
 * no run is open (an operator terminated it), the call starts one, as the database describes
 * the workspace. The time-skipping Temporal server, a real worker (mocked box activities) and
 * real PostgreSQL, through Fastify's in-process injection.
 */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApi, defaultApiSettings } from '../../api/server.js';
import type { Store } from '../../db/store.js';
import { workspaceWorkflowId } from '../../workflows/definitions.js';
import { createTimeSkippingEnv } from '../helpers/env.js';
import { FakeActivities } from '../helpers/fake-activities.js';
import { heartbeatPayload } from '../helpers/payloads.js';
import { connectTestStore } from '../helpers/postgres.js';
import { createWorker, uniqueId, waitForState } from '../helpers/worker.js';

const ADMIN = 'test-admin-token-0123456789';
const admin = { authorization: `Bearer ${ADMIN}` };
const taskQueue = uniqueId('relay-tests');
let env: TestWorkflowEnvironment;
let store: Store;
let worker: Worker;
let running: Promise<void>;
let api: FastifyInstance;
const fake = new FakeActivities();

beforeAll(async () => {
  env = await createTimeSkippingEnv();
  store = await connectTestStore();
  worker = await createWorker(env, taskQueue, {
    ...fake.activities,
    writeProjection: (projection) => store.writeProjection(projection),
  });
  running = worker.run();
  api = await buildApi(env.client, store, {
    ...defaultApiSettings,
    adminToken: ADMIN,
    taskQueue,
    logLevel: 'silent',
    sources: { giteaBaseUrl: '', githubBaseUrl: '', allowUnpinned: false, sourceHosts: [], fileRoots: [] },
  });
});

afterAll(async () => {
  await api.close();
  worker.shutdown();
  await running;
  await env.teardown();
  await store.close();
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

describe('a workflow recreated by a runtime call', () => {
  it('keeps an external runtime external, by the register that recreates it: polled, never probed', async () => {
    const { id, bearer } = await terminatedWorkspace('awaiting_agent');
    const registered = await api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: bearer,
      payload: { id, agent_card: { name: 'outside' } },
    });
    expect(registered.statusCode, registered.body).toBe(200);
    expect(registered.json()).toEqual({ status: 'registered', delivery_mode: 'poll' });
    const state = await waitForState(
      env.client.workflow.getHandle(workspaceWorkflowId(id)),
      (s) => s.status === 'online',
    );
    expect(state).toMatchObject({ runtime: 'external', deliveryMode: 'poll' });
    expect(state.counters.reconcilesStarted).toBe(0);
  });

  it('keeps an external runtime external, by the heartbeat that recreates it', async () => {
    const { id, bearer } = await terminatedWorkspace('awaiting_agent');
    const beat = await api.inject({
      method: 'POST',
      url: '/registry/heartbeat',
      headers: bearer,
      payload: heartbeatPayload(id),
    });
    expect(beat.statusCode, beat.body).toBe(200);
    const state = await waitForState(
      env.client.workflow.getHandle(workspaceWorkflowId(id)),
      (s) => s.status === 'online',
    );
    expect(state.runtime).toBe('external');
    expect(state.counters.reconcilesStarted).toBe(0);
  });

  it('keeps a managed runtime managed: coming online reconciles its plugins', async () => {
    const { id, bearer } = await terminatedWorkspace('provisioning');
    const beat = await api.inject({
      method: 'POST',
      url: '/registry/heartbeat',
      headers: bearer,
      payload: heartbeatPayload(id),
    });
    expect(beat.statusCode, beat.body).toBe(200);
    const state = await waitForState(
      env.client.workflow.getHandle(workspaceWorkflowId(id)),
      (s) => s.status === 'online' && s.counters.reconcilesStarted === 1,
    );
    expect(state.runtime).toBe('managed');
  });
});
