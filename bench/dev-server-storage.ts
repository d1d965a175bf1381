/**
 * How fast the dev server starts workspace workflows with the project's settings
 * (`devServerStorageArgs`, `devServerFleetArgs`) against a baseline that differs by one setting,
 * on a fresh database each, in alternating rounds of the same run:
 *
 *   npm run bench:dev-server [-- --starts 3000 --rounds 2 --concurrency 32 --baseline search-attributes]
 *
 * Baselines: `search-attributes` (the CLI's default: search attributes read from SQLite on every
 * request that carries them), `synchronous` (`synchronous=normal`: an fsync at every checkpoint of
 * the write-ahead log).
 *
 * Only the dev server works: the workflows start on a task queue no worker polls, so what is
 * measured is the server's part of creating a workspace (the start, its search attributes, its
 * visibility record, its first workflow task queued). Prints starts/s and the server's CPU per
 * start for each, then the ratio of the project's settings to the baseline.
 */
import { Client } from '@temporalio/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { devServerFleetArgs, devServerSearchAttributeArgs, devServerStorageArgs } from '../connection.js';
import { temporalCliPath } from '../scripts/toolchain.js';
import { workspaceStartMetadata } from '../workflows/operator-view.js';
import { freePort } from '../scripts/ports.js';
import { cpuMs } from './harness/processes.js';
import { untilTemporalAnswers } from './harness/stack.js';

const { values } = parseArgs({
  options: {
    starts: { type: 'string', default: '3000' },
    rounds: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '32' },
    baseline: { type: 'string', default: 'search-attributes' },
  },
});
const starts = Number(values.starts);
const rounds = Number(values.rounds);
const concurrency = Number(values.concurrency);
for (const [name, value] of [
  ['starts', starts],
  ['rounds', rounds],
  ['concurrency', concurrency],
] as const)
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} must be a positive integer`);

const cli = temporalCliPath();
if (cli === undefined) throw new Error('Temporal CLI not found: run `npm run toolchain`');

/** The project's dev-server arguments. */
const project = (db: string): string[] => [...devServerStorageArgs(db), ...devServerFleetArgs(db)];
/** The project's arguments with `setting` (`name=value`) given the value `baseline` in its place. */
const replaced =
  (name: string, baseline: string) =>
  (db: string): string[] =>
    project(db).map((arg) => (arg.startsWith(`${name}=`) ? `${name}=${baseline}` : arg));
const baselines: Record<string, (db: string) => string[]> = {
  'search-attributes': replaced('system.forceSearchAttributesCacheRefreshOnRead', 'true'),
  synchronous: replaced('synchronous', 'normal'),
};
const baseline = baselines[values.baseline];
if (baseline === undefined)
  throw new Error(`--baseline must be one of ${Object.keys(baselines).join(', ')} (got ${values.baseline})`);
const variants = { project, baseline } as const;
type Variant = keyof typeof variants;

async function measure(variant: Variant): Promise<{ perSecond: number; cpuMsPerStart: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'wl-dev-server-'));
  const port = await freePort();
  const args = ['server', 'start-dev', '--headless', '--ip', '127.0.0.1', '--port', String(port)];
  args.push(...variants[variant](join(dir, 'temporal.db')), '--log-level', 'error', ...devServerSearchAttributeArgs());
  const server: ChildProcess = spawn(cli as string, args, { stdio: 'ignore' });
  try {
    const connection = await untilTemporalAnswers(`127.0.0.1:${port}`, Date.now() + 60_000);
    const client = new Client({ connection });
    const pid = server.pid ?? 0;
    await sleep(2_000); // the server's own start-up work settles
    const cpuBefore = cpuMs(pid);
    const startedAt = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < starts) {
          const id = `bench-${next++}`;
          await client.workflow.start('workspaceWorkflow', {
            taskQueue: 'no-worker-polls-this',
            workflowId: `workspace:${id}`,
            args: [{ workspaceId: id }],
            ...workspaceStartMetadata(id, 'provisioning', []),
          });
        }
      }),
    );
    const seconds = (performance.now() - startedAt) / 1000;
    const cpu = cpuMs(pid) - cpuBefore;
    await connection.close();
    return { perSecond: starts / seconds, cpuMsPerStart: cpu / starts };
  } finally {
    server.kill('SIGTERM');
    await new Promise((resolve) => server.once('exit', resolve));
    rmSync(dir, { recursive: true, force: true });
  }
}

const results: Record<Variant, { perSecond: number; cpuMsPerStart: number }[]> = { project: [], baseline: [] };
for (let round = 1; round <= rounds; round++) {
  // Alternating order: a box that speeds up or slows down during the run favours neither.
  const order: Variant[] = round % 2 === 1 ? ['baseline', 'project'] : ['project', 'baseline'];
  for (const variant of order) {
    const r = await measure(variant);
    results[variant].push(r);
    console.log(
      `round ${round} ${variant === 'project' ? 'project ' : `baseline (${values.baseline})`}: ` +
        `${starts} starts at ${r.perSecond.toFixed(1)}/s, server CPU ${r.cpuMsPerStart.toFixed(2)} ms per start`,
    );
  }
}
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const rate = (v: Variant): number => mean(results[v].map((r) => r.perSecond));
const cpu = (v: Variant): number => mean(results[v].map((r) => r.cpuMsPerStart));
console.log(
  `project/baseline: ${(rate('project') / rate('baseline')).toFixed(2)}x the starts per second, ` +
    `${(cpu('project') / cpu('baseline')).toFixed(2)}x the server CPU per start (means of ${rounds} rounds)`,
);
