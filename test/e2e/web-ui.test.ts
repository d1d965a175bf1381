/**
 * End to end, as a newcomer sees it: a dev server with its Web UI and our search attributes,
 * a worker with the real activities and the local box driver, the HTTP API, and the runtime
 * simulator driving simulated runtimes through register, heartbeats, reconcile and restart.
 * Then a real browser (Debian's headless Chromium through playwright-core, no browser download)
 * opens the Web UI, filters the workflow list by the WorkspaceStatus search attribute and finds
 * the simulator's workspaces with their status, summary and current details.
 * Screenshots go to artifacts/web-ui/.
 */
import { Client } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActivities } from '../../activities/index.js';
import { LocalBoxDriver } from '../../activities/box/local.js';
import { defaultRuntimeCommand, simulatorReposDir, sourceSettingsFromEnv } from '../../settings.js';
import { buildApi, defaultApiSettings } from '../../api/server.js';
import type { Store } from '../../db/store.js';
import { browserPath } from '../../scripts/browser.js';
import { devServerEnvOptions } from '../../scripts/toolchain.js';
import { runSimulation, type SimulationResult } from '../../simulator/simulate.js';
import { installQuietRuntime } from '../helpers/env.js';
import { connectTestStore } from '../helpers/postgres.js';
import { freePort } from '../../scripts/ports.js';
import { createWorker } from '../helpers/worker.js';
import { fileScratchDir } from '../helpers/scratch.js';

const ADMIN = 'e2e-admin-token-0123456789';
const artifacts = fileURLToPath(new URL('../../artifacts/web-ui/', import.meta.url));
const dataDir = fileScratchDir('e2e');
const boxesDir = join(dataDir, 'boxes');
const runtimeCommand = defaultRuntimeCommand();

// Possibly unset in afterAll when a step of beforeAll failed.
let env: TestWorkflowEnvironment | undefined;
let uiUrl: string;
let store: Store | undefined;
let worker: Worker | undefined;
let running: Promise<void> | undefined;
let api: FastifyInstance | undefined;
let browser: Browser | undefined;
let simulation: SimulationResult | undefined;

beforeAll(async () => {
  installQuietRuntime();
  const uiPort = await freePort();
  const options = devServerEnvOptions();
  env = await TestWorkflowEnvironment.createLocal({ ...options, server: { ...options.server, uiPort } });
  uiUrl = `http://127.0.0.1:${uiPort}`;
  store = await connectTestStore('e2e');
  const taskQueue = `e2e-${process.pid}`;
  const sources = sourceSettingsFromEnv({
    WL_DATA_DIR: dataDir,
    WL_PLUGIN_SOURCE_FILE_ROOTS: simulatorReposDir(dataDir),
  });
  api = await buildApi(new Client({ connection: env.connection }), store, {
    ...defaultApiSettings,
    adminToken: ADMIN,
    taskQueue,
    logLevel: 'silent',
    sources,
  });
  const apiUrl = await api.listen({ host: '127.0.0.1', port: 0 });
  // The runtimes this worker restarts (after the reconcile delivers) find the API through their
  // driver's runtimeEnv; the simulator gives the runtimes it starts the same.
  const driver = new LocalBoxDriver({ root: boxesDir, runtimeCommand, runtimeEnv: { WL_API_URL: apiUrl } });
  worker = await createWorker(env, taskQueue, createActivities({ store, driver, sources }));
  running = worker.run();

  const lines: string[] = [];
  simulation = await runSimulation(
    {
      apiUrl,
      adminToken: ADMIN,
      workspaces: 2,
      plugins: 2,
      // The kill waits out real 15-30 s windows; dead detection is pinned on the time-skipping server.
      kill: false,
      keep: true,
      phaseTimeoutMs: 60_000,
      dataDir,
      boxesDir,
      runtimeCommand,
    },
    (line) => lines.push(line),
  );
  if (!simulation.ok) throw new Error(`simulation failed:\n${lines.join('\n')}`);
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
}, 180_000);

afterAll(async () => {
  await browser?.close();
  // The simulator kept its runtimes for the browser to see; stop them now.
  const driver = new LocalBoxDriver({ root: boxesDir, runtimeCommand });
  await Promise.all((simulation?.workspaces ?? []).map((ws) => driver.stopRuntime(ws.id)));
  await api?.close();
  worker?.shutdown();
  await running;
  await env?.teardown();
  await store?.close();
});

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
