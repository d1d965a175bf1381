/**
 * Every metric the alert rules (ops/prometheus/rules.yml) and the dashboard
 * (ops/grafana/dashboard.json) name is exported, with a value, by the running service: the real
 * worker and API processes (bench/harness/stack.ts) against a dev server and PostgreSQL, driven
 * through register, heartbeats, a reconcile that delivers and restarts, an operator's restart,
 * and a reconcile whose plugin cannot be fetched, then scraped on both endpoints.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { LocalBoxDriver } from '../../activities/box/local.js';
import { Stack } from '../../bench/harness/stack.js';
import { freePort } from '../../scripts/ports.js';
import { defaultRuntimeCommand, simulatorReposDir } from '../../settings.js';
import { TOKEN_FILE } from '../../simulator/runtime.js';
import { runSimulation, type SimulationResult } from '../../simulator/simulate.js';
import { metricNames, opsExpressions, parseScrape, scrapedSamples, total } from '../helpers/prometheus.js';
import { fileScratchDir } from '../helpers/scratch.js';

/**
 * Named by the rules but not in the service's scrape, each for its reason. `never`: not exported
 * by this code at all (the test fails once one is, so it leaves this list); otherwise exported
 * only once what it counts happens, which a healthy run does not make happen.
 */
const NOT_YET_EXPORTED = new Map([
  ['up', { never: true, why: "Prometheus's own series for each scrape target, not the service's" }],
  [
    'temporal_workflow_task_execution_failed_total',
    { never: false, why: 'the SDK exports it from the first failed workflow task' },
  ],
]);

const dir = fileScratchDir('metrics');
const runtimeCommand = defaultRuntimeCommand();
const lines: string[] = [];
let stack: Stack | undefined;
let workerMetricsUrl = '';
let simulation: SimulationResult | undefined;
const BROKEN = 'metrics-broken-plugin';

async function scrape(url: string): Promise<Map<string, number[]>> {
  const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  expect(response.status, url).toBe(200);
  return scrapedSamples(await response.text());
}

/** The sum of a metric's series at `url` whose labels include `labels`. */
async function counter(url: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(url, { signal: AbortSignal.timeout(5_000) })).text();
  return total(parseScrape(text), name, labels);
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s\n${lines.join('\n')}`);
    await sleep(250);
  }
}

beforeAll(async () => {
  workerMetricsUrl = `http://127.0.0.1:${await freePort()}/metrics`;
  stack = new Stack({
    dir,
    runtimeCommand,
    workflowBundle: inject('workflowBundlePath'),
    env: {
      WL_WORKER_METRICS_ADDR: new URL(workerMetricsUrl).host,
      WL_PLUGIN_SOURCE_FILE_ROOTS: simulatorReposDir(dir),
    },
    log: (line) => lines.push(line),
  });
  await stack.start();
  const { apiUrl, adminToken } = stack;
  simulation = await runSimulation(
    {
      apiUrl,
      adminToken,
      workspaces: 2,
      plugins: 1,
      kill: false,
      keep: true,
      phaseTimeoutMs: 90_000,
      dataDir: dir,
      boxesDir: stack.boxesDir,
      runtimeCommand,
    },
    (line) => lines.push(line),
  );
  if (!simulation.ok) throw new Error(`simulation failed:\n${lines.join('\n')}`);

  const admin = { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' };
  // An operator's restart of a simulated workspace.
  const target = simulation.workspaces[0]?.id ?? '';
  const restart = await fetch(`${apiUrl}/workspaces/${target}/restart`, {
    method: 'POST',
    headers: admin,
    body: JSON.stringify({ reason: 'metrics test' }),
  });
  expect(restart.status).toBe(200);
  // A workspace declaring a plugin whose repository does not exist: its reconcile fails.
  const created = await fetch(`${apiUrl}/workspaces`, {
    method: 'POST',
    headers: admin,
    body: JSON.stringify({
      id: BROKEN,
      plugins: [{ name: 'missing', source: `git+file://${simulatorReposDir(dir)}/missing#main` }],
    }),
  });
  expect(created.status).toBe(201);
  const driver = new LocalBoxDriver({ root: stack.boxesDir, runtimeCommand, runtimeEnv: { WL_API_URL: apiUrl } });
  const boxDir = await driver.createBox(BROKEN);
  await writeFile(join(boxDir, TOKEN_FILE), `${((await created.json()) as { auth_token: string }).auth_token}\n`, {
    mode: 0o600,
  });
  await driver.startRuntime(BROKEN);
  await until(
    'the requested restart',
    async () => (await counter(workerMetricsUrl, 'workspace_restarts_total', { cause: 'requested' })) >= 1,
  );
  await until(
    'the broken plugin’s reconcile failure',
    async () => (await counter(workerMetricsUrl, 'workspace_reconcile_failures_total')) >= 1,
  );
  // The activity counts its failure before it throws; the SDK counts it once the failure is sent.
  await until(
    'the SDK’s count of the failed activity',
    async () => (await counter(workerMetricsUrl, 'temporal_activity_execution_failed_total')) >= 1,
  );
}, 300_000);

afterAll(async () => {
  const driver = new LocalBoxDriver({ root: stack?.boxesDir ?? join(dir, 'boxes'), runtimeCommand });
  const ids = [...(simulation?.workspaces ?? []).map((ws) => ws.id), BROKEN];
  await Promise.all(ids.map((id) => driver.stopRuntime(id).catch(() => false)));
  await stack?.stop();
}, 120_000);

describe('a live scrape of the worker and the API', () => {
  it('has every metric the alert rules and the dashboard name, with a value', async () => {
    const [worker, api] = await Promise.all([scrape(workerMetricsUrl), scrape(`${stack?.apiUrl ?? ''}/metrics`)]);
    const named = new Map<string, string[]>();
    for (const { name, expr } of opsExpressions())
      for (const metric of metricNames(expr)) named.set(metric, [...(named.get(metric) ?? []), name]);
    const missing = [...named]
      .filter(([metric]) => !NOT_YET_EXPORTED.has(metric))
      .filter(([metric]) => !(worker.get(metric) ?? api.get(metric) ?? []).some(Number.isFinite))
      .map(([metric, users]) => `${metric} (named by ${users.join(', ')})`);
    expect(missing).toEqual([]);
    // The list of exceptions stays short and true: a metric there is named, and one never
    // exported is absent.
    for (const [metric, { never }] of NOT_YET_EXPORTED) {
      expect(named.has(metric), metric).toBe(true);
      if (never) expect(worker.has(metric) || api.has(metric), metric).toBe(false);
    }
  });

  it('counts what the run did, where it happened', async () => {
    const url = workerMetricsUrl;
    const apiUrl = `${stack?.apiUrl ?? ''}/metrics`;
    // Two simulated workspaces: each delivered its plugin (a restart for the reconcile), one was
    // restarted by request; the broken one's reconcile failed for good in a step of its pass.
    expect(await counter(url, 'workspace_plugin_deliveries_total', { reason: 'missing' })).toBeGreaterThanOrEqual(2);
    expect(await counter(url, 'workspace_restarts_total', { cause: 'reconcile' })).toBeGreaterThanOrEqual(2);
    expect(await counter(url, 'workspace_restarts_total', { cause: 'requested' })).toBeGreaterThanOrEqual(1);
    expect(await counter(url, 'workspace_reconcile_passes_total')).toBeGreaterThanOrEqual(3);
    expect(
      await counter(url, 'workspace_status_transitions_total', { from: 'provisioning', to: 'online' }),
    ).toBeGreaterThanOrEqual(4);
    expect(await counter(url, 'temporal_activity_execution_failed_total')).toBeGreaterThanOrEqual(1);
    expect(
      await counter(apiUrl, 'http_requests_total', { route: '/registry/register', status: '200' }),
    ).toBeGreaterThanOrEqual(5);
    // The fleet's gauge: the three workspaces, every one of them live.
    expect(await counter(apiUrl, 'workspaces')).toBe(3);
  });
});
