/**
 * The whole stack as its own processes (bench/harness/stack.ts: PostgreSQL, a dev server with its
 * Web UI, the worker and the API), driven by the runtime simulator through register, heartbeats,
 * a reconcile that delivers and restarts, then looked at as an operator does:
 * - a real browser (Debian's headless Chromium through playwright-core, no browser download)
 *   opens the Web UI, filters the workflow list by the WorkspaceStatus search attribute and finds
 *   the simulator's workspaces with their status, summary and current details; screenshots go to
 *   artifacts/web-ui/;
 * - after an operator's restart and a reconcile whose plugin cannot be fetched, both Prometheus
 *   endpoints are scraped: every metric the alert rules (ops/prometheus/rules.yml) and the
 *   dashboard (ops/grafana/dashboard.json) name is exported, with a value;
 * - `npm run bench:heartbeat`'s quick mode runs its rounds against the floor and this stack's API,
 *   with workspaces of its own. No figure of the bench is asserted: a test does not time.
 */
import { mkdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { LocalBoxDriver } from '../../activities/box/local.js';
import { Stack } from '../../bench/harness/stack.js';
import { quickOptions, runHeartbeatBench } from '../../bench/heartbeat.js';
import { browserPath } from '../../scripts/browser.js';
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

const artifacts = fileURLToPath(new URL('../../artifacts/web-ui/', import.meta.url));
const dir = fileScratchDir('stack');
const runtimeCommand = defaultRuntimeCommand();
const lines: string[] = [];
// Possibly unset in afterAll when a step of beforeAll failed.
let stack: Stack | undefined;
let browser: Browser | undefined;
let simulation: SimulationResult | undefined;
let uiUrl = '';
let workerMetricsUrl = '';
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
    webUi: true,
    workflowBundle: inject('workflowBundlePath'),
    env: {
      WL_WORKER_METRICS_ADDR: new URL(workerMetricsUrl).host,
      WL_PLUGIN_SOURCE_FILE_ROOTS: simulatorReposDir(dir),
    },
    log: (line) => lines.push(line),
  });
  await stack.start();
  uiUrl = stack.uiUrl;
  simulation = await runSimulation(
    {
      apiUrl: stack.apiUrl,
      adminToken: stack.adminToken,
      workspaces: 2,
      plugins: 2,
      // The kill waits out real 15-30 s windows; dead detection is pinned on the time-skipping server.
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
}, 300_000);

afterAll(async () => {
  await browser?.close();
  // The simulator kept its runtimes for the browser and the scrape; stop them now.
  const driver = new LocalBoxDriver({ root: stack?.boxesDir ?? join(dir, 'boxes'), runtimeCommand });
  const ids = [...(simulation?.workspaces ?? []).map((ws) => ws.id), BROKEN];
  await Promise.all(ids.map((id) => driver.stopRuntime(id).catch(() => false)));
  await stack?.stop();
}, 120_000);

/** What beforeAll set up; it threw if any of it failed. */
function started(): { page: () => Promise<Page>; workspaces: SimulationResult['workspaces'] } {
  if (browser === undefined || simulation === undefined) throw new Error('setup did not complete');
  const open = browser;
  return { page: () => open.newPage({ viewport: { width: 1600, height: 1000 } }), workspaces: simulation.workspaces };
}

async function openFilteredList(page: Page, query: string): Promise<void> {
  await page.goto(`${uiUrl}/namespaces/default/workflows?query=${encodeURIComponent(query)}`);
  // Show our search attributes as columns, as an operator would (Configure Workflows Table).
  await page.getByTestId('workflows-summary-table-configuration-button').click();
  await page.getByTestId('orderable-list-item-WorkspaceStatus-add-button').click();
  await page.getByTestId('orderable-list-item-PluginsPending-add-button').click();
  await page.getByTestId('orderable-list-item-Run ID-remove-button').click();
  await page.getByTestId('drawer-close-button').click();
}

/** The page's text, including the frames the UI renders markdown (summary, details) in. */
async function allText(page: Page): Promise<string> {
  const texts = await Promise.all(
    page.frames().map((frame) =>
      frame
        .locator('body')
        .innerText()
        .catch(() => ''),
    ),
  );
  return texts.join('\n');
}

async function waitForText(page: Page, expected: string, timeoutMs = 20_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await allText(page);
    if (text.includes(expected)) return text;
    if (Date.now() > deadline) throw new Error(`"${expected}" never appeared; the page showed:\n${text}`);
    await page.waitForTimeout(250);
  }
}

describe('the Web UI shows every workspace', () => {
  beforeAll(async () => {
    browser = await chromium.launch({
      executablePath: browserPath(),
      args: [
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--disable-background-networking',
      ],
    });
    mkdirSync(artifacts, { recursive: true });
  }, 60_000);

  it('the simulator brought each workspace online with its plugins installed after one restart', () => {
    const { workspaces } = started();
    expect(workspaces).toHaveLength(2);
    for (const ws of workspaces) {
      expect(ws.status).toBe('online');
      expect(ws.pluginsInstalled).toBe(2);
      expect(ws.restarts).toBe(1);
      expect(ws.lastRestartReason).toBe('reconcile delivered 2 plugin(s)');
      const path = ws.transitions.map((t) => `${t.from}→${t.to}`);
      expect(path).toEqual(['provisioning→online', 'online→provisioning', 'provisioning→online']);
    }
  });

  it('filtered by WorkspaceStatus = "online", the list shows the workspace with its status and pending count', async () => {
    const { page: newPage, workspaces } = started();
    const page = await newPage();
    const [target] = workspaces;
    if (!target) throw new Error('no workspace');
    await openFilteredList(page, `WorkspaceStatus = "online" AND WorkflowId = "workspace:${target.id}"`);
    const row = page.getByRole('row').filter({ hasText: `workspace:${target.id}` });
    await row.waitFor({ timeout: 20_000 });
    const cells = (await row.getByRole('cell').allInnerTexts()).map((text) => text.trim());
    expect(cells).toContain(`workspace:${target.id}`);
    expect(cells).toContain('online');
    expect(cells).toContain('0');
    await page.screenshot({ path: join(artifacts, 'workflow-list.png') });

    // Filtered by another status, the list does not show it.
    await page.goto(
      `${uiUrl}/namespaces/default/workflows?query=${encodeURIComponent(`WorkspaceStatus = "offline" AND WorkflowId = "workspace:${target.id}"`)}`,
    );
    await page.getByText('0 Workflows', { exact: true }).first().waitFor({ timeout: 20_000 });
    expect(
      await page
        .getByRole('row')
        .filter({ hasText: `workspace:${target.id}` })
        .count(),
    ).toBe(0);
    await page.close();
  });

  it('the workflow page shows the summary, and current details with status, plugins and the last restart', async () => {
    const { page: newPage, workspaces } = started();
    const page = await newPage();
    const [target] = workspaces;
    if (!target) throw new Error('no workspace');
    await page.goto(`${uiUrl}/namespaces/default/workflows/${encodeURIComponent(`workspace:${target.id}`)}`);
    await page.getByText('User Metadata').click();
    await waitForText(page, `Workspace ${target.id}`);
    const body = await waitForText(page, 'Status: online');
    expect(body).toContain('Plugins: 2 declared, 0 pending');
    expect(body).toContain('Plugins declared at creation: sim-plugin-1, sim-plugin-2.');
    expect(body).toContain('last: reconcile delivered 2 plugin(s)');
    await page.screenshot({ path: join(artifacts, 'workflow-page.png'), fullPage: true });
    // The event history lists the reconcile's activities by their summaries, naming the plugins.
    await page.getByText('Event History', { exact: false }).first().click();
    const history = await waitForText(page, 'deliver plugin sim-plugin-');
    expect(history).toMatch(/deliver plugin sim-plugin-\d+ @[0-9a-f]{12}/);
    await page.screenshot({ path: join(artifacts, 'workflow-history.png'), fullPage: true });
    await page.close();
  });
});

describe('a live scrape of the worker and the API', () => {
  // An operator's restart and a reconcile that fails, after the browser saw the workspaces as
  // the simulator left them.
  beforeAll(async () => {
    if (stack === undefined || simulation === undefined) throw new Error('setup did not complete');
    const { apiUrl, adminToken } = stack;
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
  }, 120_000);

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

describe('bench:heartbeat', () => {
  it('the quick mode runs a round against the floor, then one against the API, every heartbeat answered 200', async () => {
    if (stack === undefined) throw new Error('setup did not complete');
    const result = await runHeartbeatBench({ ...quickOptions, env: {}, keep: false }, stack);
    expect(result.rounds.map((round) => round.side)).toEqual(['floor', 'api']);
    for (const round of result.rounds) {
      expect(round.ok).toBeGreaterThan(0);
      expect(round.non200).toEqual(new Map());
      expect(round.errors).toBe(0);
      expect(round.latencies).toHaveLength(round.ok);
    }
    expect(result.floor.perSecond).toBeGreaterThan(0);
    expect(result.api.perSecond).toBeGreaterThan(0);
  }, 240_000);
});
