/**
 * The simulator (`npm run simulate`): drives a running stack (`npm start`) through a workspace's
 * whole life with simulated runtimes (simulator/runtime.ts) in local boxes, and prints what it
 * observes:
 *   1. makes M local git plugin repositories and creates N workspaces declaring them;
 *   2. provisions each box (local box driver) and watches provisioning → online → reconcile
 *      delivers → one restart → online, until every plugin is installed;
 *   3. kills one runtime (SIGKILL) and, as a dispatcher that cannot reach it, reports failed
 *      dispatches until dead detection declares it dead; watches it restart and come back;
 *   4. deprovisions what it created (unless --keep): removes each workspace, stops its runtime and
 *      deletes its box folder.
 * With `ssh` (`--ssh`) the worker reaches the same box folders over SSH (simulator/ssh.ts): every
 * boot, restart, probe, delivery, boot credential and stop goes through a throwaway sshd.
 * `runSimulation` is the core, for tests; the CLI runs it when this file is invoked directly. The
 * phases are in simulator/phases.ts, what a poll says in simulator/watch.ts, the summary and the
 * cleanup in simulator/summary.ts and simulator/cleanup.ts; they share one Simulation
 * (simulator/simulation.ts).
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  adminTokenPath,
  boxesDirFromEnv,
  dataDir as defaultDataDir,
  defaultRuntimeCommand,
  runtimeCommandFromEnv,
  sshKeyDirFromEnv,
} from '../settings.js';
import { cleanup } from './cleanup.js';
import { kill, newKillReport, online, provision, setup } from './phases.js';
import { heartbeatMsFromEnv } from './runtime.js';
import { Simulation, type KillReport, type Log, type SimulationOptions, type SimulationResult } from './simulation.js';
import { summary } from './summary.js';

export type {
  KillReport,
  Log,
  ObservedTransition,
  PhaseReport,
  SimulationOptions,
  SimulationResult,
  WorkspaceReport,
} from './simulation.js';

/** `WL_ADMIN_TOKEN`, else the token `npm start` wrote to `<data dir>/admin-token`. */
export async function adminTokenFromEnv(env: NodeJS.ProcessEnv): Promise<string> {
  const fromEnv = env['WL_ADMIN_TOKEN'];
  if (fromEnv) return fromEnv;
  const file = adminTokenPath(env);
  const text = await readFile(file, 'utf8').catch(() => null);
  if (text === null || text.trim() === '')
    throw new Error(
      `no admin token: set WL_ADMIN_TOKEN, or start the stack with \`npm start\` (it writes ${file}; ` +
        'set WL_DATA_DIR to the data directory the stack uses)',
    );
  return text.trim();
}

/**
 * Runs the phases against the API at `options.apiUrl` and, unless `keep`, cleans up; never throws
 * for a phase that failed (the result names it). A phase runs only when the one before it
 * succeeded; the summary and the cleanup always run.
 *
 * The environment: the runtimes it starts (first boots) get this process's environment plus
 * `WL_API_URL = options.apiUrl`, passed to their box driver; it does not change `process.env`.
 * The runtimes the worker restarts (after a reconcile, after the kill) are started by the
 * worker's own box driver: they find the API through the worker's environment (`npm start` sets
 * `WL_API_URL` once its API listens; a test running the worker in process gives its driver
 * `runtimeEnv`), and the heartbeat interval there is the worker's `WL_SIM_HEARTBEAT_MS`.
 */
export async function runSimulation(options: SimulationOptions, log: Log = console.log): Promise<SimulationResult> {
  const sim = new Simulation(options, log);
  let ok = await sim.phase('setup: plugin repositories, workspaces, boxes', async () => {
    const repos = await setup(sim);
    await provision(sim, repos);
  });
  if (ok)
    ok = await sim.phase('online: every workspace online with its plugins installed', (deadline) =>
      online(sim, deadline),
    );
  let killed: KillReport | null = null;
  const target = sim.tracked[0];
  if (ok && options.kill && target !== undefined) {
    const report = newKillReport(target);
    killed = report;
    await sim.phase(`kill: ${target.id} dies, is declared dead, restarts`, (deadline) =>
      kill(sim, target, report, deadline),
    );
  }
  const workspaces = await summary(sim, killed);
  await cleanup(sim);
  const { runId, failures, interrupted, phases } = sim;
  return { ok: failures.length === 0 && !interrupted, runId, failures, interrupted, phases, workspaces, kill: killed };
}

// --- CLI -----------------------------------------------------------------------------------------

const usage = `usage: npm run simulate -- [options]
  --workspaces N   workspaces to create (default 3)
  --plugins M      plugins declared per workspace (default 2)
  --no-kill        skip the kill / dead-detection phase
  --api URL        the API (default $WL_API_URL or http://127.0.0.1:8080)
  --keep           leave the workspaces running at exit
  --timeout S      seconds allowed for each phase (default 120)
  --ssh            reach the boxes over SSH: a throwaway sshd on a loopback port, a client key in
                   the worker's key directory ($WL_SSH_KEY_DIR or <data dir>/ssh-keys)
Admin token: $WL_ADMIN_TOKEN, else <data dir>/admin-token written by \`npm start\` (data dir: $WL_DATA_DIR or data/).`;

export async function simulationOptionsFromArgs(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<SimulationOptions> {
  const { values } = parseArgs({
    args: argv,
    allowNegative: true,
    options: {
      workspaces: { type: 'string', default: '3' },
      plugins: { type: 'string', default: '2' },
      kill: { type: 'boolean', default: true },
      api: { type: 'string', default: env['WL_API_URL'] ?? 'http://127.0.0.1:8080' },
      keep: { type: 'boolean', default: false },
      timeout: { type: 'string', default: '120' },
      ssh: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  const count = (name: string, text: string, min: number): number => {
    const value = Number(text);
    if (!Number.isInteger(value) || value < min) throw new Error(`--${name} must be an integer >= ${min}, got ${text}`);
    return value;
  };
  const runtimeHeartbeatMs = heartbeatMsFromEnv(env);
  if (runtimeHeartbeatMs === null)
    throw new Error(`WL_SIM_HEARTBEAT_MS must be a number of milliseconds >= 100, got ${env['WL_SIM_HEARTBEAT_MS']}`);
  return {
    apiUrl: values.api.replace(/\/+$/, ''),
    adminToken: await adminTokenFromEnv(env),
    workspaces: count('workspaces', values.workspaces, 1),
    plugins: count('plugins', values.plugins, 0),
    kill: values.kill,
    keep: values.keep,
    phaseTimeoutMs: count('timeout', values.timeout, 1) * 1000,
    dataDir: defaultDataDir(env),
    boxesDir: boxesDirFromEnv(env),
    runtimeCommand: runtimeCommandFromEnv(env) ?? defaultRuntimeCommand(),
    runtimeHeartbeatMs,
    ssh: values.ssh,
    sshKeyDir: sshKeyDirFromEnv(env),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  let options: SimulationOptions;
  try {
    options = await simulationOptionsFromArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`simulate: ${(err as Error).message}\n\n${usage}`);
    process.exit(1);
  }
  const interrupt = new AbortController();
  process.on('SIGINT', () => {
    if (interrupt.signal.aborted) {
      console.error(
        `simulate: second Ctrl-C: exiting without cleanup${options.ssh ? ` (the throwaway sshd and its key in ${options.sshKeyDir ?? ''} stay)` : ''}`,
      );
      process.exit(130);
    }
    console.error(`simulate: Ctrl-C: stopping${options.keep ? '' : ' and cleaning up (Ctrl-C again to skip)'}`);
    interrupt.abort();
  });
  console.log(
    `simulate: ${options.workspaces} workspace(s) × ${options.plugins} plugin(s) against ${options.apiUrl}` +
      `${options.kill ? ', with a kill' : ''}; boxes in ${options.boxesDir}${options.ssh ? ', reached over SSH' : ''}`,
  );
  const result = await runSimulation({ ...options, signal: interrupt.signal });
  if (result.ok) {
    console.log('simulate: every phase succeeded');
    process.exit(0);
  }
  for (const failure of result.failures) console.error(`simulate: did not happen: ${failure}`);
  if (result.interrupted) {
    console.error('simulate: interrupted');
    process.exit(130);
  }
  process.exit(1);
}
