/**
 * One trace from an HTTP call to the activities it causes: a runtime's POST /registry/register
 * (the API's span), the Temporal client's signal (its child), and, carried through the workflow,
 * the reconcile the register brings about: diff, probe, stage, deliver, record, and the box's
 * restart that loads the plugin (each activity's span a child of the signal's). The log lines
 * of the API and of the activities carry the trace's id and the workspace's id.
 *
 * The real API, workflow, activities (local box driver, a git repository as the plugin's
 * source) and PostgreSQL, on a dev server (the time-skipping test server drops a signal's
 * headers, and with them the trace); spans go to an in-memory exporter.
 */
import { Client } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker, type LogEntry } from '@temporalio/worker';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import type { FastifyInstance } from 'fastify';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createActivities } from '../../activities/index.js';
import { LocalBoxDriver } from '../../activities/box/local.js';
import { LifecycleMetrics } from '../../activities/metrics.js';
import { buildApi } from '../../api/server.js';
import type { Store } from '../../db/store.js';
import { clientInterceptors, startTracing, type Tracing } from '../../tracing.js';
import { workerInterceptors } from '../../worker.js';
import { workspaceWorkflowId } from '../../workflows/definitions.js';
import { TEST_ADMIN_TOKEN, testApiSettings } from '../helpers/api.js';
import { captureWorkerLogs, createLocalEnv } from '../helpers/env.js';
import { createPluginRepo, localSourceSettings } from '../helpers/git.js';
import { connectTestStore } from '../helpers/postgres.js';
import { uniqueId, waitForState } from '../helpers/worker.js';
import { fileScratchDir } from '../helpers/scratch.js';

const exporter = new InMemorySpanExporter();
const workerLogs: LogEntry[] = [];
let stopCapture: () => void = () => undefined;
const apiLogs: Record<string, unknown>[] = [];
const root = fileScratchDir('trace');
const taskQueue = uniqueId('trace-tests');
let tracing: Tracing;
let env: TestWorkflowEnvironment;
let store: Store;
let driver: LocalBoxDriver;
let worker: Worker;
let running: Promise<void>;
let api: FastifyInstance;
const boxes: string[] = [];

beforeAll(async () => {
  const started = startTracing('trace-test', null, exporter);
  if (started === null) throw new Error('tracing did not start');
  tracing = started;
  stopCapture = captureWorkerLogs((entry) => workerLogs.push(entry));
  env = await createLocalEnv();
  store = await connectTestStore();
  driver = new LocalBoxDriver({
    root: join(root, 'boxes'),
    runtimeCommand: [process.execPath, '-e', 'setInterval(() => {}, 1 << 30)'],
  });
  const sources = localSourceSettings(root, 1024 * 1024);
  const metrics = new LifecycleMetrics();
  worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue,
    workflowBundle: { codePath: inject('workflowBundlePath') },
    activities: createActivities({ store, driver, sources, metrics }),
    interceptors: workerInterceptors(metrics, tracing),
  });
  running = worker.run();
  const client = new Client({
    connection: env.connection,
    namespace: env.namespace ?? 'default',
    interceptors: clientInterceptors(tracing),
  });
  api = await buildApi(client, store, testApiSettings(taskQueue, sources, { logLevel: 'info' }), {
    tracing,
    logStream: { write: (line) => apiLogs.push(JSON.parse(line) as Record<string, unknown>) },
  });
});

afterAll(async () => {
  await api.close();
  for (const id of boxes) await driver.stopRuntime(id);
  worker.shutdown();
  await running;
  await env.teardown();
  stopCapture();
  await tracing.shutdown();
  await store.close();
});

/** The spans of one trace as `name <- parent name` lines, the root first. */
function tree(spans: ReadableSpan[]): string[] {
  const byId = new Map(spans.map((span) => [span.spanContext().spanId, span]));
  return spans.map((span) => `${span.name} <- ${byId.get(span.parentSpanId ?? '')?.name ?? '(root)'}`);
}

describe('a trace', () => {
  it('runs from POST /registry/register through the signal to the reconcile’s activities; logs carry its id', async () => {
    createPluginRepo(join(root, 'repos'), 'acme', 'seo');
    const admin = { authorization: `Bearer ${TEST_ADMIN_TOKEN}` };
    const id = uniqueId('traced');
    const created = await api.inject({
      method: 'POST',
      url: '/workspaces',
      headers: admin,
      payload: { id, plugins: [{ name: 'seo', source: 'gitea://acme/seo#v1' }] },
    });
    expect(created.statusCode, created.body).toBe(201);
    const token = created.json<{ auth_token: string }>().auth_token;
    boxes.push(id);
    await driver.createBox(id);
    await driver.startRuntime(id);
    exporter.reset();

    const registered = await api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: { authorization: `Bearer ${token}` },
      payload: { id, url: 'http://93.184.216.34:8000', agent_card: { name: 'traced' }, delivery_mode: 'push' },
    });
    expect(registered.statusCode, registered.body).toBe(200);
    const handle = env.client.workflow.getHandle(workspaceWorkflowId(id));
    await waitForState(handle, (s) => s.plugins['seo']?.status === 'installed' && s.restart.count === 1, 30_000);
    await waitForState(handle, (s) => !s.restart.inFlight, 30_000);

    const http = exporter.getFinishedSpans().find((span) => span.name === 'POST /registry/register');
    if (http === undefined) throw new Error('no span for the register');
    const traceId = http.spanContext().traceId;
    await expect
      .poll(() => exporter.getFinishedSpans().filter((span) => span.name === 'RunActivity:restartBox').length)
      .toBe(1);
    const spans = exporter.getFinishedSpans().filter((span) => span.spanContext().traceId === traceId);
    const lines = tree(spans);
    console.info(`the register's trace:\n  ${lines.join('\n  ')}`);
    expect(http.parentSpanId).toBeUndefined();
    expect(http.attributes).toMatchObject({ 'workspace.id': id, 'http.response.status_code': 200 });
    const signal = spans.find((span) => span.name === 'SignalWorkflow:register');
    expect(signal?.parentSpanId).toBe(http.spanContext().spanId);
    // Every step of the reconcile, the box's restart after the delivery too, hangs off the signal.
    for (const activity of [
      'writeProjection',
      'listPluginDiff',
      'probePlugin',
      'stagePlugin',
      'deliverPlugin',
      'recordInstalled',
      'restartBox',
    ])
      expect(lines).toContain(`RunActivity:${activity} <- SignalWorkflow:register`);

    // The API's lines for the call, and the activities' lines for its reconcile, carry both ids.
    const completed = apiLogs.find((line) => line['msg'] === 'request completed' && line['trace_id'] === traceId);
    expect(completed).toMatchObject({ workspace_id: id, res: { statusCode: 200 } });
    const pass = workerLogs.find((entry) => entry.message === 'reconcile pass' && entry.meta?.['workspaceId'] === id);
    expect(pass?.meta).toMatchObject({ trace_id: traceId, workspace_id: id });
  }, 90_000);
});
