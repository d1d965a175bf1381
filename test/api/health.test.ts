/**
 * The operations routes (api/routes/health.ts: healthz, readyz, metrics, the OpenAPI document)
 * and what the API answers when Temporal or the database is down or it is past its admission
 * limit.
 */
import { describe, expect, it } from 'vitest';
import { defaultAdmissionSettings } from '../../api/admission.js';
import { buildApi } from '../../api/server.js';
import { Store } from '../../db/store.js';
import { useApiHarness } from '../helpers/api.js';
import { createTimeSkippingEnv } from '../helpers/env.js';
import { heartbeatPayload } from '../helpers/payloads.js';
import { parseScrape } from '../helpers/prometheus.js';
import { statuses } from '../../workflows/state-machine.js';

const harness = useApiHarness('health-tests');

describe('operations', () => {
  it('healthz, readyz and metrics answer', async () => {
    expect((await harness.api.inject({ method: 'GET', url: '/healthz' })).json()).toEqual({ status: 'ok' });
    const ready = await harness.api.inject({ method: 'GET', url: '/readyz' });
    expect(ready.statusCode).toBe(200);
    expect(ready.json()).toEqual({ temporal: 'ok', database: 'ok' });
    const metrics = await harness.api.inject({ method: 'GET', url: '/metrics' });
    expect(metrics.body).toMatch(/http_requests_total\{method="GET",route="\/readyz",status="200"\} \d+/);
    expect(metrics.body).toContain('http_request_duration_seconds_bucket');
    // The fleet's gauge has a series for every live status, from the projection.
    const fleet = parseScrape(metrics.body).filter((sample) => sample.name === 'workspaces');
    expect(fleet.map((sample) => sample.labels['status'])).toEqual(statuses.filter((status) => status !== 'removed'));
    const scraped = parseScrape(metrics.body).map((sample) => sample.name);
    expect(scraped).toContain('workspaces_cordoned');
    expect(scraped).toContain('workspaces_crash_looping');
  });

  it('the OpenAPI document is served and lists every route', async () => {
    const doc = (await harness.api.inject({ method: 'GET', url: '/openapi.json' })).json<{
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
        'POST /workspaces/{id}/cordon',
        'POST /workspaces/{id}/uncordon',
        'PUT /workspaces/{id}/box',
        'POST /workspaces/{id}/dispatch-failed',
        'DELETE /workspaces/{id}',
        'GET /events',
        'GET /fleet',
        'POST /fleet/pause',
        'POST /fleet/resume',
        'GET /healthz',
        'GET /readyz',
      ].sort(),
    );
  });
});

describe('Temporal unavailable', () => {
  it('answers 503 with Retry-After, never 200, when Temporal is stopped', async () => {
    const { id, token } = await harness.createWorkspace();
    const doomed = await createTimeSkippingEnv();
    const isolated = await buildApi(doomed.client, harness.store, harness.settings({ temporalTimeoutMs: 2_000 }));
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
      expect((await harness.state(id)).counters.heartbeats).toBe(0);
    } finally {
      await isolated.close();
    }
  });
});

describe('overload and a database that is down', () => {
  it('past its admission limit the API refuses at once with 429 and Retry-After; what it accepted arrives', async () => {
    const { id, token } = await harness.createWorkspace();
    const limited = await buildApi(
      harness.env.client,
      harness.store,
      harness.settings({
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
      expect((await harness.store.heartbeats.read(id)).beats).toBe(accepted);
      const metrics = await limited.inject({ method: 'GET', url: '/metrics' });
      expect(metrics.body).toContain('api_admission_refused{pool="calls",reason="queue_full"} 9');
    } finally {
      await limited.close();
    }
  });

  it('a database that is down is 503 with Retry-After at once, and readyz names it', async () => {
    const { id, token } = await harness.createWorkspace();
    const nowhere = Store.connect('postgres://postgres@127.0.0.1:1/none', { connectTimeoutMs: 500 });
    const isolated = await buildApi(harness.env.client, nowhere, harness.settings());
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
      expect((await harness.state(id)).counters.heartbeats).toBe(0);
    } finally {
      await isolated.close();
      await nowhere.close();
    }
  });
});
