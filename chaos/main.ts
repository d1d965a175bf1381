/**
 * `npm run chaos`: starts the real pieces (PostgreSQL, a Temporal dev server, the worker, the
 * API) on free loopback ports, injects each fault, counts what the API acknowledged and what
 * the workflows recorded, and prints a table: fault | figures | expected | held. Exits 0 when
 * every row held, 1 otherwise (2 on bad arguments).
 *
 *   npm run chaos [-- --rows postgres,worker-kill,temporal,api,api-outage,boxes-killed,crash-loop,drain,cordoned-dies,
 *                         overload,one-worker,one-api]
 *                 [--plugins 8 --plugin-mb 20] [--outage 20] [--flood-rate 1000 --flood-seconds 30]
 *                 [--cluster]
 *
 * --cluster: the same rows against the production shape (bench/harness/stack.ts): the Temporal
 * server on PostgreSQL (fsync on) in place of the dev server, two workers, two APIs behind nginx;
 * PostgreSQL's restart is then under Temporal and the ledger at once. Two rows are for this shape
 * only (and its default): one-worker (one of the two workers killed) and one-api (one of the two
 * APIs killed behind nginx).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  apiOutage,
  apiRestart,
  moments,
  oneApiKill,
  oneWorkerKill,
  overload,
  postgresRestart,
  removeRowWorkspaces,
  temporalRestart,
  workerKill,
  type Moment,
  type Row,
  type RowContext,
} from './rows.js';
import { Stack } from '../bench/harness/stack.js';
import { boxesKilled, chaosRuntimeCommand, cordonedDies, crashLoop, drain } from './fleet-rows.js';

export const rowNames = [
  'postgres',
  'worker-kill',
  'temporal',
  'api',
  'api-outage',
  'boxes-killed',
  'crash-loop',
  'drain',
  'cordoned-dies',
  'overload',
  'one-worker',
  'one-api',
] as const;
/** The rows that need two workers and two APIs behind nginx: the cluster shape's own. */
const clusterOnlyRows: readonly RowName[] = ['one-worker', 'one-api'];
export type RowName = (typeof rowNames)[number];

export interface ChaosOptions {
  rows: RowName[];
  plugins: number;
  pluginMb: number;
  moments: Moment[];
  outageMs: number;
  floodRate: number;
  floodSeconds: number;
  /** Keep the run folder (logs, boxes, the dev server's database) afterwards. */
  keep: boolean;
  /** The production shape (StackOptions.cluster) with two workers and two APIs. */
  cluster?: boolean;
  /** A workflow bundle built beforehand, for the stack's workers (see StackOptions). */
  workflowBundle?: string;
  log: (line: string) => void;
}

/** Each row's settings unless told otherwise (the CLI's defaults). */
export const defaultRowSettings: Pick<
  ChaosOptions,
  'plugins' | 'pluginMb' | 'moments' | 'outageMs' | 'floodRate' | 'floodSeconds'
> = {
  plugins: 8,
  pluginMb: 20,
  moments: [...moments],
  outageMs: 20_000,
  floodRate: 1_000,
  floodSeconds: 30,
};

/**
 * The liveness TTL of the API-outage row: longer than the controller's serving grace (30 s) and a
 * sweep, so the API's silence is a disruption before the first lease expires.
 */
const API_OUTAGE_TTL_MS = 45_000;

/**
 * The liveness TTL of the rows where boxes die: longer than the 15 s a heartbeat counts as recent
 * (a silence any shorter is judged "queued", not dead), short enough for a row of a few deaths.
 */
const FLEET_ROW_TTL_MS = 16_000;

export async function runChaos(options: ChaosOptions): Promise<Row[]> {
  const dir = mkdtempSync(join(tmpdir(), 'wl-chaos-'));
  const { log } = options;
  const stack = new Stack({
    dir,
    runtimeCommand: chaosRuntimeCommand(),
    log,
    ...(options.cluster === true ? { cluster: true, workers: 2, apis: 2 } : {}),
    ...(options.workflowBundle === undefined ? {} : { workflowBundle: options.workflowBundle }),
  });
  const rows: Row[] = [];
  const ctx: RowContext = { stack, log };
  const record = (row: Row): void => {
    rows.push(row);
    log(`${row.held ? 'held' : 'NOT HELD'}: ${row.fault}\n    ${row.figures}`);
  };
  const attempt = async (fault: string, work: () => Promise<Row>): Promise<void> => {
    try {
      record(await work());
    } catch (err) {
      record({
        fault,
        figures: `the row failed: ${err instanceof Error ? err.message : String(err)}`,
        expected: '-',
        held: false,
      });
    } finally {
      await removeRowWorkspaces(stack);
    }
  };
  const shape = options.cluster === true ? 'cluster' : 'dev server';
  const temporal = options.cluster === true ? 'Temporal server' : 'Temporal dev server';
  log(`chaos: run folder ${dir} (${shape})`);
  try {
    await stack.start();
    log(`chaos: stack up (API ${stack.apiUrl}, Temporal ${stack.temporalAddress}, ${stack.databaseUrl})`);
    for (const name of options.rows) {
      switch (name) {
        case 'postgres':
          await attempt(
            options.cluster === true ? 'PostgreSQL restart under Temporal and the ledger' : 'PostgreSQL restart',
            () => postgresRestart(ctx, { workspaces: 20, rate: 40, outageMs: options.outageMs }),
          );
          break;
        case 'worker-kill':
          for (const moment of options.moments)
            await attempt(`worker SIGKILL during ${moment}`, () =>
              workerKill(
                ctx,
                { plugins: options.plugins, pluginMb: options.pluginMb, moments: options.moments },
                moment,
              ),
            );
          break;
        case 'temporal':
          await attempt(`${temporal} restart`, () =>
            temporalRestart(ctx, { ttlMs: 20_000, downMs: 5_000, server: temporal }),
          );
          break;
        case 'api':
          await attempt('API restart', () => apiRestart(ctx, { workspaces: 20, rate: 40 }));
          break;
        case 'api-outage':
          await attempt('API down for 3x the TTL', () =>
            apiOutage(ctx, { workspaces: 20, rate: 20, ttlMs: API_OUTAGE_TTL_MS }),
          );
          break;
        case 'boxes-killed':
          await attempt('10% of the boxes killed at once', () =>
            boxesKilled(ctx, { workspaces: 30, rate: 15, killed: 3, ttlMs: FLEET_ROW_TTL_MS, perMinute: 2 }),
          );
          break;
        case 'crash-loop':
          await attempt('a box that dies 5 s after every boot', () =>
            crashLoop(ctx, { others: 4, rate: 2, ttlMs: FLEET_ROW_TTL_MS, settleWindowMs: 10_000, deaths: 5 }),
          );
          break;
        case 'drain':
          await attempt('a delivery to busy boxes', () => drain(ctx, { drainTimeoutMs: 20_000, busyForMs: 10_000 }));
          break;
        case 'cordoned-dies':
          await attempt('a cordoned workspace whose box dies', () => cordonedDies(ctx, { ttlMs: FLEET_ROW_TTL_MS }));
          break;
        case 'one-worker':
          await attempt('one of two workers killed', () => oneWorkerKill(ctx, { workspaces: 20 }));
          break;
        case 'one-api':
          await attempt('one of two APIs killed behind nginx', () => oneApiKill(ctx, { workspaces: 20, rate: 40 }));
          break;
        case 'overload':
          await attempt('overload', () =>
            overload(ctx, {
              workspaces: 200,
              rate: options.floodRate,
              seconds: options.floodSeconds,
              normalRate: 40,
            }),
          );
          break;
      }
    }
  } finally {
    await stack.stop().catch((err: unknown) => log(`chaos: stopping the stack: ${String(err)}`));
    if (options.keep) log(`chaos: kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

/** The rows as a Markdown table. */
export function table(rows: Row[]): string {
  const cell = (text: string): string => text.replace(/\|/g, '\\|');
  return [
    '| fault | figures | expected | held |',
    '| --- | --- | --- | --- |',
    ...rows.map(
      (r) => `| ${cell(r.fault)} | ${cell(r.figures)} | ${cell(r.expected)} | ${r.held ? 'yes' : '**no**'} |`,
    ),
  ].join('\n');
}

function parseOptions(): ChaosOptions {
  const { values } = parseArgs({
    options: {
      rows: { type: 'string', default: rowNames.join(',') },
      moments: { type: 'string', default: defaultRowSettings.moments.join(',') },
      plugins: { type: 'string', default: String(defaultRowSettings.plugins) },
      'plugin-mb': { type: 'string', default: String(defaultRowSettings.pluginMb) },
      outage: { type: 'string', default: String(defaultRowSettings.outageMs / 1_000) },
      'flood-rate': { type: 'string', default: String(defaultRowSettings.floodRate) },
      'flood-seconds': { type: 'string', default: String(defaultRowSettings.floodSeconds) },
      keep: { type: 'boolean', default: false },
      cluster: { type: 'boolean', default: false },
    },
  });
  const list = <T extends string>(flag: string, text: string, allowed: readonly T[]): T[] =>
    text.split(',').map((item) => {
      if (!(allowed as readonly string[]).includes(item))
        throw new Error(`--${flag}: unknown ${JSON.stringify(item)} (one or more of ${allowed.join(', ')})`);
      return item as T;
    });
  const number = (flag: string, text: string): number => {
    const value = Number(text);
    if (!Number.isFinite(value) || value <= 0) throw new Error(`--${flag} must be a positive number, got ${text}`);
    return value;
  };
  const rows = list('rows', values.rows, rowNames).filter(
    (row) => values.cluster || values.rows !== rowNames.join(',') || !clusterOnlyRows.includes(row),
  );
  const needCluster = rows.filter((row) => clusterOnlyRows.includes(row));
  if (!values.cluster && needCluster.length > 0) throw new Error(`--rows ${needCluster.join(',')} need --cluster`);
  return {
    cluster: values.cluster,
    rows,
    moments: list('moments', values.moments, moments),
    plugins: number('plugins', values.plugins),
    pluginMb: number('plugin-mb', values['plugin-mb']),
    outageMs: number('outage', values.outage) * 1_000,
    floodRate: number('flood-rate', values['flood-rate']),
    floodSeconds: number('flood-seconds', values['flood-seconds']),
    keep: values.keep,
    log: (line) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  let options: ChaosOptions;
  try {
    options = parseOptions();
  } catch (err) {
    console.error(`chaos: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(2);
  }
  const rows = await runChaos(options);
  console.log(`\n${table(rows)}\n`);
  const failed = rows.filter((row) => !row.held).length;
  console.log(
    failed === 0 ? `chaos: all ${rows.length} rows held` : `chaos: ${failed} of ${rows.length} rows did not hold`,
  );
  process.exit(failed === 0 ? 0 : 1);
}
