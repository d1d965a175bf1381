/**
 * The dashboard's main panels (ops/grafana/dashboard.json) as a picture, drawn from scrapes of a
 * running stack where Grafana does not run: it scrapes the worker and the API every few seconds
 * into a folder, then draws each panel's series with the dashboard's titles in a page that
 * headless Chromium (scripts/browser.sh) renders to a PNG.
 *
 *   npm start                                  # one terminal
 *   npm run dashboard:render -- --seconds 90   # another, then, at once, in a third:
 *   npm run simulate
 *
 * Counters are drawn as their increase over the last WINDOW_MS (the dashboard's 5 min is longer
 * than a simulation), histograms as the 95th percentile of that window, gauges as they are.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { DEFAULT_WORKER_METRICS_ADDRESS } from '../settings.js';
import { parseScrape, type Sample } from '../test/helpers/prometheus.js';
import { browserPath } from './browser.js';

const WINDOW_MS = 30_000;
const root = fileURLToPath(new URL('../', import.meta.url));

type Source = 'worker' | 'api';

/** One line of a panel: a metric, how it is read, and the label its series are split by. */
interface Query {
  source: Source;
  metric: string;
  read: 'gauge' | 'increase' | 'p95';
  by?: string;
  /** The legend of a series: `{}` stands for its label's value. */
  legend: string;
  /** Only the series whose labels include these. */
  where?: Record<string, string>;
}

interface Panel {
  title: string;
  unit?: 's';
  queries: Query[];
}

const PANELS: { row: string; panels: Panel[] }[] = [
  {
    row: 'Fleet',
    panels: [
      {
        title: 'Workspaces by status',
        queries: [{ source: 'api', metric: 'workspaces', read: 'gauge', by: 'status', legend: '{}' }],
      },
      {
        title: 'Oldest heartbeat age by status',
        unit: 's',
        queries: [
          {
            source: 'api',
            metric: 'workspace_oldest_heartbeat_age_seconds',
            read: 'gauge',
            by: 'status',
            legend: '{}',
          },
        ],
      },
      {
        title: 'Restarts by cause',
        queries: [
          { source: 'worker', metric: 'workspace_restarts_total', read: 'increase', by: 'cause', legend: '{}' },
        ],
      },
      {
        title: 'Dead detection',
        queries: [
          {
            source: 'api',
            metric: 'workspace_dispatch_verdicts_total',
            read: 'increase',
            by: 'verdict',
            legend: 'verdict {}',
          },
          { source: 'worker', metric: 'workspace_dead_declarations_total', read: 'increase', legend: 'declared dead' },
        ],
      },
      {
        title: 'Plugin deliveries and removals',
        queries: [
          {
            source: 'worker',
            metric: 'workspace_plugin_deliveries_total',
            read: 'increase',
            by: 'reason',
            legend: 'delivered: {}',
          },
          { source: 'worker', metric: 'workspace_plugin_removals_total', read: 'increase', legend: 'removed' },
        ],
      },
      {
        title: 'Reconcile passes and failures',
        queries: [
          {
            source: 'worker',
            metric: 'workspace_reconcile_passes_total',
            read: 'increase',
            by: 'mode',
            legend: 'pass: {}',
          },
          {
            source: 'worker',
            metric: 'workspace_reconcile_failures_total',
            read: 'increase',
            by: 'step',
            legend: 'failed: {}',
          },
        ],
      },
    ],
  },
  {
    row: 'Workers',
    panels: [
      {
        title: 'Workflow task schedule-to-start',
        unit: 's',
        queries: [
          {
            source: 'worker',
            metric: 'temporal_workflow_task_schedule_to_start_latency_seconds',
            read: 'p95',
            legend: 'p95',
          },
        ],
      },
      {
        title: 'Activity schedule-to-start',
        unit: 's',
        queries: [
          {
            source: 'worker',
            metric: 'temporal_activity_schedule_to_start_latency_seconds',
            read: 'p95',
            legend: 'p95',
          },
        ],
      },
      {
        title: 'Sticky cache',
        queries: [
          { source: 'worker', metric: 'temporal_sticky_cache_size', read: 'gauge', legend: 'cached' },
          { source: 'worker', metric: 'temporal_sticky_cache_hit_total', read: 'increase', legend: 'hits' },
        ],
      },
    ],
  },
  {
    row: 'API',
    panels: [
      {
        title: 'Requests by status',
        queries: [{ source: 'api', metric: 'http_requests_total', read: 'increase', by: 'status', legend: '{}' }],
      },
      {
        title: 'Request latency p95 by route',
        unit: 's',
        queries: [
          {
            source: 'api',
            metric: 'http_request_duration_seconds',
            read: 'p95',
            by: 'route',
            legend: '{}',
          },
        ],
      },
      {
        title: 'Task slots available',
        queries: [
          {
            source: 'worker',
            metric: 'temporal_worker_task_slots_available',
            read: 'gauge',
            by: 'worker_type',
            legend: '{}',
          },
        ],
      },
    ],
  },
];

interface Scrape {
  at: number;
  samples: Record<Source, Sample[]>;
}

/** Scrapes both endpoints every `everyMs` for `seconds`, into `dir` (`<ms>-worker.txt`, `<ms>-api.txt`). */
async function record(dir: string, urls: Record<Source, string>, seconds: number, everyMs: number): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    const at = Date.now();
    for (const source of ['worker', 'api'] as const) {
      const text = await fetch(urls[source], { signal: AbortSignal.timeout(2_000) }).then(
        (r) => r.text(),
        () => '',
      );
      writeFileSync(join(dir, `${at}-${source}.txt`), text);
    }
    await sleep(Math.max(0, at + everyMs - Date.now()));
  }
}

function load(dir: string): Scrape[] {
  const times = [...new Set(readdirSync(dir).map((file) => Number(file.split('-')[0])))].filter(Number.isFinite);
  return times
    .sort((a, b) => a - b)
    .map((at) => ({
      at,
      samples: {
        worker: parseScrape(readFileSync(join(dir, `${at}-worker.txt`), 'utf8')),
        api: parseScrape(readFileSync(join(dir, `${at}-api.txt`), 'utf8')),
      },
    }));
}

/** The query's value per series key at one scrape (summed over the other labels). */
function reading(scrape: Scrape, query: Query, name = query.metric): Map<string, number> {
  const values = new Map<string, number>();
  for (const sample of scrape.samples[query.source]) {
    if (sample.name !== name) continue;
    if (Object.entries(query.where ?? {}).some(([k, v]) => sample.labels[k] !== v)) continue;
    const key = query.by === undefined ? '' : (sample.labels[query.by] ?? '');
    const bucket = name.endsWith('_bucket') ? `${key}\u0000${sample.labels['le'] ?? ''}` : key;
    values.set(bucket, (values.get(bucket) ?? 0) + sample.value);
  }
  return values;
}

/** The scrape at or just before `at`, for a window's start; the first when the window starts before it. */
function before(scrapes: Scrape[], at: number): Scrape | undefined {
  return [...scrapes].reverse().find((s) => s.at <= at) ?? scrapes[0];
}

function increase(now: Map<string, number>, then: Map<string, number> | undefined): Map<string, number> {
  const out = new Map<string, number>();
  for (const [key, value] of now) {
    const old = then?.get(key) ?? 0;
    out.set(key, value >= old ? value - old : value);
  }
  return out;
}

/** Prometheus's histogram_quantile over cumulative bucket counts. */
function quantile(q: number, buckets: [number, number][]): number | null {
  const sorted = buckets.sort(([a], [b]) => a - b);
  const total = sorted[sorted.length - 1]?.[1] ?? 0;
  if (total === 0) return null;
  const rank = q * total;
  let [prevLe, prevCount] = [0, 0];
  for (const [le, count] of sorted) {
    if (count >= rank) {
      if (!Number.isFinite(le)) return prevLe;
      return prevLe + (le - prevLe) * ((rank - prevCount) / Math.max(count - prevCount, 1e-9));
    }
    [prevLe, prevCount] = [le, count];
  }
  return prevLe;
}

/** Each series of a query: its legend and its value at every scrape (null: none). */
function series(scrapes: Scrape[], query: Query): { legend: string; points: (number | null)[] }[] {
  const byKey = new Map<string, (number | null)[]>();
  scrapes.forEach((scrape, i) => {
    let values: Map<string, number | null>;
    if (query.read === 'gauge') values = reading(scrape, query);
    else if (query.read === 'increase') {
      const then = before(scrapes, scrape.at - WINDOW_MS);
      values = increase(reading(scrape, query), then && reading(then, query));
    } else {
      const then = before(scrapes, scrape.at - WINDOW_MS);
      const bucketName = `${query.metric}_bucket`;
      const grown = increase(reading(scrape, query, bucketName), then && reading(then, query, bucketName));
      const perKey = new Map<string, [number, number][]>();
      for (const [bucket, count] of grown) {
        const [key = '', le = ''] = bucket.split('\u0000');
        perKey.set(key, [...(perKey.get(key) ?? []), [le === '+Inf' ? Infinity : Number(le), count]]);
      }
      values = new Map([...perKey].map(([key, buckets]) => [key, quantile(0.95, buckets)]));
    }
    for (const [key, value] of values) {
      const points = byKey.get(key) ?? scrapes.map(() => null);
      points[i] = value;
      byKey.set(key, points);
    }
  });
  return [...byKey]
    .filter(([, points]) => query.read === 'gauge' || points.some((p) => p !== null && p > 0))
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([key, points]) => ({ legend: query.legend.replace('{}', key), points }));
}

const COLOURS = ['#73bf69', '#f2cc0c', '#5794f2', '#ff780a', '#f2495c', '#b877d9', '#8ab8ff', '#fade2a', '#37872d'];

function escape(text: string): string {
  return text.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] ?? c);
}

function format(value: number, unit: 's' | undefined): string {
  if (unit === 's') return value >= 1 ? `${+value.toFixed(1)} s` : `${+(value * 1000).toFixed(0)} ms`;
  return String(+value.toFixed(2));
}

/** The axis's top: `value` rounded up to 1, 2 or 5 times a power of ten. */
function roundUp(value: number): number {
  const power = 10 ** Math.floor(Math.log10(value));
  return ([1, 2, 5, 10].find((step) => step * power >= value) ?? 10) * power;
}

function chart(panel: Panel, scrapes: Scrape[]): string {
  const [w, h, left, top, bottom] = [400, 170, 46, 8, 18];
  const lines = panel.queries.flatMap((query) => series(scrapes, query));
  const values = lines.flatMap((l) => l.points.filter((p): p is number => p !== null));
  const max = roundUp(Math.max(...values, panel.unit === 's' ? 0.01 : 1));
  const t0 = scrapes[0]?.at ?? 0;
  const span = Math.max((scrapes[scrapes.length - 1]?.at ?? 0) - t0, 1);
  const x = (at: number): number => left + ((at - t0) / span) * (w - left - 8);
  const y = (v: number): number => top + (1 - v / max) * (h - top - bottom);
  const grid = [0, 0.5, 1]
    .map((f) => {
      const v = max * f;
      return `<line x1="${left}" x2="${w - 8}" y1="${y(v)}" y2="${y(v)}" stroke="#2c3235"/><text x="${left - 4}" y="${y(v) + 4}" text-anchor="end">${format(v, panel.unit)}</text>`;
    })
    .join('');
  const ticks = [0, 0.5, 1]
    .map(
      (f) =>
        `<text x="${left + f * (w - left - 8)}" y="${h - 4}" text-anchor="${['start', 'middle', 'end'][f * 2] ?? 'middle'}">${Math.round((f * span) / 1000)} s</text>`,
    )
    .join('');
  const paths = lines
    .map((line, i) => {
      let d = '';
      line.points.forEach((p, j) => {
        if (p === null) return;
        d += `${d === '' || line.points[j - 1] === null ? 'M' : 'L'}${x(scrapes[j]?.at ?? t0).toFixed(1)},${y(p).toFixed(1)}`;
      });
      return `<path d="${d}" fill="none" stroke="${COLOURS[i % COLOURS.length]}" stroke-width="1.8"/>`;
    })
    .join('');
  const legend = lines
    .map((line, i) => `<span><i style="background:${COLOURS[i % COLOURS.length]}"></i>${escape(line.legend)}</span>`)
    .join('');
  return `<div class="panel"><h3>${escape(panel.title)}</h3><svg width="${w}" height="${h}">${grid}${ticks}${paths}</svg><div class="legend">${legend || '<span>none in this run</span>'}</div></div>`;
}

function page(scrapes: Scrape[]): string {
  const rows = PANELS.map(
    ({ row, panels }) => `<h2>${row}</h2><div class="row">${panels.map((p) => chart(p, scrapes)).join('')}</div>`,
  ).join('');
  return `<!doctype html><html><head><style>
body { background:#111217; color:#ccccdc; font:12px sans-serif; margin:12px; width:1300px }
h1 { font-size:16px; margin:0 0 4px } h2 { font-size:13px; margin:10px 0 4px; color:#9fa7b3 }
.row { display:flex; flex-wrap:wrap; gap:8px } .panel { background:#181b1f; border:1px solid #2c3235; padding:6px; width:408px }
h3 { font-size:12px; margin:0 0 4px; font-weight:600 } svg text { fill:#8e8e8e; font-size:10px }
.legend span { margin-right:10px; white-space:nowrap; display:inline-block } .legend i { display:inline-block; width:10px; height:3px; margin-right:4px; vertical-align:middle }
</style></head><body><h1>workspace-lifecycle: the fleet</h1>
<div>Scraped every few seconds from the worker and the API during a run; counters as their increase over the last ${WINDOW_MS / 1000} s, latencies as the p95 of that window.</div>
${rows}</body></html>`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      worker: {
        type: 'string',
        default: `http://${process.env['WL_WORKER_METRICS_ADDR'] ?? DEFAULT_WORKER_METRICS_ADDRESS}/metrics`,
      },
      api: { type: 'string', default: `${process.env['WL_API_URL'] ?? 'http://127.0.0.1:8080'}/metrics` },
      seconds: { type: 'string', default: '0' },
      every: { type: 'string', default: '3' },
      scrapes: { type: 'string', default: join(root, 'data', 'dashboard-scrapes') },
      out: { type: 'string', default: join(root, 'docs', 'images', 'dashboard.png') },
    },
  });
  const dir = resolve(values.scrapes);
  if (Number(values.seconds) > 0) {
    console.log(`dashboard: scraping ${values.worker} and ${values.api} for ${values.seconds} s into ${dir}`);
    await record(dir, { worker: values.worker, api: values.api }, Number(values.seconds), Number(values.every) * 1000);
  }
  const scrapes = load(dir);
  if (scrapes.length < 2) throw new Error(`dashboard: fewer than two scrapes in ${dir}: record some with --seconds`);
  const browser = await chromium.launch({
    executablePath: browserPath(),
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  try {
    const tab = await browser.newPage({ viewport: { width: 1324, height: 800 } });
    await tab.setContent(page(scrapes));
    mkdirSync(dirname(values.out), { recursive: true });
    await tab.screenshot({ path: values.out, fullPage: true });
  } finally {
    await browser.close();
  }
  console.log(`dashboard: ${scrapes.length} scrapes drawn into ${values.out}`);
}
