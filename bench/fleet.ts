/**
 * `npm run bench:fleet`: a fleet of workspaces heartbeating through the real pieces, each its own
 * process (chaos/stack.ts: PostgreSQL, a Temporal dev server, `--workers` worker processes and
 * `--apis` API processes). For each fleet size, on a fresh stack: create the workspaces through
 * the API, register each once, then one scheduler sends every workspace's heartbeat once per
 * `--period` seconds, spread evenly, with a bounded number in flight: a warm-up until the setup
 * settled (every workspace projected online), then `--duration` seconds measured.
 * Prints progress on the way and, per size, throughput, latency, refusals, the workspaces not
 * online at the end, and each process's peak memory and mean CPU; then one Markdown table.
 *
 *   npm run bench:fleet -- --workspaces 1000,3000,10000 --duration 120
 *                          [--period 30] [--workers 1] [--apis 1] [--create-concurrency 32]
 *                          [--in-flight 256] [--max-warmup 600] [--profile DIR] [--keep]
 *                          [--dev-server-config KEY=VALUE ...] [--dev-server-pragma NAME=VALUE ...]
 *                          [--dead 10] [--dead-wait S] [--liveness-ttl S] [--at-once] [--cluster]
 *
 * The window also reports the workflow tasks the dev server completed in it (its /metrics), the
 * workers' peak memory, and the load generator's (this process's) CPU and event loop delay: a
 * generator that cannot keep up shows as late sends and a long delay, not as a slow stack.
 * After the window, `--dead` runtimes stop beating at once while the rest beat on; each one's
 * time from its last acknowledged heartbeat to its workspace going offline is reported
 * (`--liveness-ttl` shortens the workflows' TTL for that; `--dead-wait`, by default the TTL and
 * two minutes, bounds the wait). `--at-once`: each runtime registers and beats as soon as its
 * workspace is created, and the run reports how long until every workspace is online.
 *
 * --cluster: the production shape (bench/harness/stack.ts): the Temporal server on PostgreSQL
 * (fsync on) in place of the dev server, nginx in front of the APIs, the load through nginx.
 *
 * Managed workspaces, as a fleet has (created `provisioning`, online on their register, which
 * runs a reconcile of their empty plugin set), but no box processes: the worker runs with no
 * runtime command (WL_RUNTIME_COMMAND empty) and no box folder exists, so a restart, should dead
 * detection ask for one, starts nothing. The measured window starts once the setup has settled,
 * so it measures the fleet, not the backlog of its creation; the warm-up is reported apart.
 *
 * One fleet size runs in bench/fleet-run.ts, on the shared harness (bench/harness/: the stack, the
 * heartbeat load, /metrics counters, /proc sampling); bench/fleet-report.ts prints it.
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { defaultLifecycleConfig } from '../workflows/config.js';
import { table, type FleetResult } from './fleet-report.js';
import { log, runSize, type FleetOptions } from './fleet-run.js';
import { positive } from './harness/options.js';

function parseOptions(): FleetOptions {
  const { values } = parseArgs({
    options: {
      workspaces: { type: 'string', default: '1000' },
      duration: { type: 'string', default: '60' },
      period: { type: 'string', default: '30' },
      workers: { type: 'string', default: '1' },
      apis: { type: 'string', default: '1' },
      'create-concurrency': { type: 'string', default: '32' },
      'in-flight': { type: 'string', default: '256' },
      'max-warmup': { type: 'string', default: '600' },
      profile: { type: 'string' },
      keep: { type: 'boolean', default: false },
      cluster: { type: 'boolean', default: false },
      'dev-server-config': { type: 'string', multiple: true, default: [] },
      'dev-server-pragma': { type: 'string', multiple: true, default: [] },
      dead: { type: 'string', default: '10' },
      'dead-wait': { type: 'string' },
      'liveness-ttl': { type: 'string' },
      'at-once': { type: 'boolean', default: false },
    },
  });
  const keyValue = (flag: string, pair: string): string => {
    if (!/^[\w.]+=\S+$/.test(pair)) throw new Error(`--${flag} takes KEY=VALUE, got ${pair}`);
    return pair;
  };
  const livenessTtlS =
    values['liveness-ttl'] === undefined ? undefined : positive('liveness-ttl', values['liveness-ttl'], false);
  const dead = Number(values.dead);
  if (!Number.isInteger(dead) || dead < 0) throw new Error(`--dead must be a whole number, got ${values.dead}`);
  return {
    sizes: values.workspaces.split(',').map((size) => positive('workspaces', size)),
    durationS: positive('duration', values.duration, false),
    periodS: positive('period', values.period, false),
    workers: positive('workers', values.workers),
    apis: positive('apis', values.apis),
    createConcurrency: positive('create-concurrency', values['create-concurrency']),
    inFlight: positive('in-flight', values['in-flight']),
    maxWarmupS: positive('max-warmup', values['max-warmup'], false),
    profileDir: values.profile,
    keep: values.keep,
    cluster: values.cluster,
    devServerArgs: [
      ...values['dev-server-config'].flatMap((pair) => ['--dynamic-config-value', keyValue('dev-server-config', pair)]),
      ...values['dev-server-pragma'].flatMap((pair) => ['--sqlite-pragma', keyValue('dev-server-pragma', pair)]),
    ],
    dead,
    // The TTL and two minutes more: a verdict later than that is a finding, not a wait.
    deadWaitS:
      values['dead-wait'] === undefined
        ? (livenessTtlS ?? defaultLifecycleConfig.livenessTtlMs / 1_000) + 120
        : positive('dead-wait', values['dead-wait'], false),
    livenessTtlS,
    atOnce: values['at-once'],
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  let options: FleetOptions;
  try {
    options = parseOptions();
  } catch (err) {
    console.error(`bench:fleet: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(2);
  }
  log(
    `bench:fleet: sizes ${options.sizes.join(', ')}; a fresh stack per size; the worker caches ` +
      `${process.env['WL_WORKER_MAX_CACHED_WORKFLOWS'] ?? '10000 (its default)'} workflows` +
      (options.devServerArgs.length > 0 ? `; the dev server with ${options.devServerArgs.join(' ')} too` : ''),
  );
  const results: FleetResult[] = [];
  for (const size of options.sizes) results.push(await runSize(size, options));
  console.log(
    `\n${options.workers} worker(s), ${options.apis} API(s), period ${options.periodS} s, ` +
      `${options.durationS} s of load per size; peak RSS (PSS summed for the postgres tree) / mean CPU% ` +
      `(100% = one core)\n\n${table(results)}\n`,
  );
  process.exit(0);
}
