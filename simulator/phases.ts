/**
 * The phases of a simulation, in the order runSimulation runs them: setup (the API answers,
 * plugin repositories, the sshd with `--ssh`), provision (workspaces, boxes, first boots), online
 * (every workspace online with its plugins installed), kill (one runtime dies, dead detection
 * declares it dead, it restarts and comes back). Each throws what did not happen; the caller
 * (Simulation.phase) records it.
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { processAlive } from '../activities/box/local.js';
import { adminTokenPath, simulatorReposDir, sshKeyDirFromEnv } from '../settings.js';
import { defaultLifecycleConfig } from '../workflows/config.js';
import type { DispatchVerdict } from '../workflows/definitions.js';
import { describeError, errorText } from './http.js';
import { TOKEN_FILE } from './runtime.js';
import { TimeoutError, type KillReport, type Simulation, type Tracked } from './simulation.js';
import { SimulatedSshBoxes } from './ssh.js';
import { DISPATCH_CALLER, notReady, pollAll, ready, waitUntil } from './watch.js';

const run = promisify(execFile);

/** How often the kill phase's dispatcher reports a failed dispatch. */
const DISPATCH_MS = 3_000;
/** The kill waits until the last heartbeat is this much older than the "recent" window. */
const KILL_MARGIN_MS = 1_000;
/** The restart id of an SSH box's first boot, which the simulator does itself. */
export const SSH_BOOT_RESTART_ID = 'simulator-boot';

export interface PluginRepo {
  name: string;
  dir: string;
  source: string;
}

// Commits of the plugin repositories: a fixed identity, no signing, no hooks of the user's config.
const gitIdentity = [
  '-c',
  'user.name=workspace-lifecycle simulator',
  '-c',
  'user.email=simulator@workspace-lifecycle',
  '-c',
  'commit.gpgsign=false',
  '-c',
  'core.hooksPath=/dev/null',
];

/**
 * One git repository per plugin under `<root>/<name>`, with a `plugin.yaml` naming it, committed on
 * `main`. Idempotent: a repository already holding that commit is reused.
 */
export async function ensurePluginRepos(root: string, names: string[]): Promise<PluginRepo[]> {
  const repos: PluginRepo[] = [];
  for (const name of names) {
    const dir = resolve(root, name);
    const manifest = `name: ${name}\nversion: 1.0.0\ndescription: simulated plugin ${name}\n`;
    const git = (...args: string[]): Promise<{ stdout: string }> => run('git', [...gitIdentity, '-C', dir, ...args]);
    const ready =
      (await readFile(join(dir, 'plugin.yaml'), 'utf8').catch(() => null)) === manifest &&
      (await git('rev-parse', '--verify', '-q', 'refs/heads/main').then(
        () => true,
        () => false,
      )) &&
      (await git('status', '--porcelain').then(
        ({ stdout }) => stdout.trim() === '',
        () => false,
      ));
    if (!ready) {
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
      await git('init', '-q', '-b', 'main');
      await writeFile(join(dir, 'plugin.yaml'), manifest);
      await writeFile(join(dir, 'SKILL.md'), `# ${name}\n\nA plugin made by the workspace-lifecycle simulator.\n`);
      await git('add', '.');
      await git('commit', '-q', '-m', `plugin ${name}`);
    }
    repos.push({ name, dir, source: `git+file://${dir}#main` });
  }
  return repos;
}

/** The API answers and takes the admin token; the plugin repositories exist; with `--ssh`, the sshd runs. */
export async function setup(sim: Simulation): Promise<PluginRepo[]> {
  const { options, api } = sim;
  const health = await fetch(`${options.apiUrl}/healthz`, { signal: AbortSignal.timeout(5_000) }).catch(
    (err: unknown) => {
      throw new Error(`API at ${options.apiUrl} not reachable (is \`npm start\` running?): ${describeError(err)}`);
    },
  );
  if (!health.ok) throw new Error(`API at ${options.apiUrl}/healthz answered ${health.status}`);
  const probe = await api.call('GET', '/workspaces?limit=1');
  if (probe.status === 401) throw new Error(`the API refused the admin token (WL_ADMIN_TOKEN or ${adminTokenPath()})`);

  const names = Array.from({ length: options.plugins }, (_, i) => `sim-plugin-${i + 1}`);
  const repos = await ensurePluginRepos(simulatorReposDir(options.dataDir), names);
  for (const repo of repos) sim.say(`plugin ${repo.name}: ${repo.source}`);

  if (options.ssh) {
    const keyDir = options.sshKeyDir ?? sshKeyDirFromEnv();
    const sshBoxes = await SimulatedSshBoxes.start({
      runId: sim.runId,
      dir: join(options.dataDir, 'simulator'),
      keyDir,
      apiUrl: options.apiUrl,
      runtimeCommand: options.runtimeCommand,
      ...(options.runtimeHeartbeatMs === undefined ? {} : { heartbeatMs: options.runtimeHeartbeatMs }),
      log: (line) => sim.say(line),
    });
    sim.ssh = sshBoxes;
    process.once('exit', sim.abandonSsh);
    const { sshd } = sshBoxes;
    sim.say(
      `--ssh: the boxes are reached over SSH: sshd pid ${sshd.pid} on 127.0.0.1:${sshd.port} (host key ` +
        `${sshd.hostKey.slice(0, 32)}…, log ${sshd.log}), user ${sshBoxes.user}, key ${sshBoxes.keyRef} in ${keyDir}; ` +
        'every boot, restart, probe, delivery, boot credential and stop goes over SSH',
    );
  }
  return repos;
}

/**
 * Creates each workspace declaring `repos` through the API, makes its box with its token, and
 * boots its runtime (over SSH with `--ssh`, through the box's own restart command).
 */
export async function provision(sim: Simulation, repos: PluginRepo[]): Promise<void> {
  const { options, api, driver, ssh } = sim;
  for (let i = 1; i <= options.workspaces; i++) {
    sim.checkAbort();
    const id = `sim-${sim.runId}-${i}`;
    const created = await api.call('POST', '/workspaces', {
      id,
      plugins: repos.map((r) => ({ name: r.name, source: r.source })),
    });
    if (created.status !== 201) throw new Error(`POST /workspaces ${id}: ${created.status} ${errorText(created.body)}`);
    // Tracked from here on, so cleanup removes it whatever fails next.
    sim.tracked.push({ id, boxDir: driver.boxDir(id), state: null, pid: null, transitions: [] });
    const body = created.body as { auth_token?: unknown };
    if (typeof body.auth_token !== 'string') throw new Error(`POST /workspaces ${id}: no auth_token in the answer`);
    if (ssh !== null) {
      const settings = ssh.settingsFor(id, driver.boxDir(id));
      const set = await api.call('PUT', `/workspaces/${id}/box`, settings);
      if (set.status !== 200) throw new Error(`PUT /workspaces/${id}/box: ${set.status} ${errorText(set.body)}`);
    }
    const boxDir = await driver.createBox(id);
    await writeFile(join(boxDir, TOKEN_FILE), `${body.auth_token}\n`, { mode: 0o600 });
    if (ssh === null) {
      await driver.startRuntime(id);
      sim.say(`${sim.pad(id)} created with ${repos.length} plugin(s); box ${boxDir}; runtime started`);
    } else {
      // The first boot goes through the same restart command as every later one: a box whose
      // settings do not work fails here, naming why, and every runtime starts the same way.
      await ssh.provision(id, boxDir);
      await ssh.driver.restart(id, SSH_BOOT_RESTART_ID);
      sim.say(
        `${sim.pad(id)} created with ${repos.length} plugin(s); box ${boxDir}, reached over SSH; ` +
          `runtime started over SSH (pid ${(await driver.runtimePid(id)) ?? '-'})`,
      );
    }
  }
}

/** Watches until every workspace is online with its plugins installed (register → reconcile → restart → online). */
export async function online(sim: Simulation, deadline: number): Promise<void> {
  await waitUntil(
    sim,
    deadline,
    () => notReady(sim),
    () => sim.tracked.every((t) => ready(sim, t)),
  );
}

/** The kill phase's report for `target`, before anything happened. */
export function newKillReport(target: Tracked): KillReport {
  return {
    workspaceId: target.id,
    killedPid: null,
    newPid: null,
    verdicts: [],
    declaredDead: false,
    restarted: false,
    backOnline: false,
  };
}

/**
 * SIGKILLs the target's runtime once its last heartbeat is no longer recent, reports failed
 * dispatches as a dispatcher that cannot reach it would until it is declared dead, then watches
 * it restart and come back online. Fills in `report` on the way.
 */
export async function kill(sim: Simulation, target: Tracked, report: KillReport, deadline: number): Promise<void> {
  const { driver } = sim;
  await untilHeartbeatOld(sim, target, deadline);
  const pid = await driver.runtimePid(target.id);
  if (pid === null || !processAlive(pid))
    throw new Error(`no running runtime process for ${target.id} (${driver.boxDir(target.id)}/runtime.pid)`);
  const before: Before = {
    pid,
    restarts: target.state?.restart.count ?? 0,
    deadDeclarations: target.state?.deadDetection.deadDeclarations ?? 0,
  };
  process.kill(pid, 'SIGKILL');
  report.killedPid = pid;
  sim.say(
    `${sim.pad(target.id)} SIGKILL runtime pid ${pid} (last heartbeat ${((heartbeatAge(target) ?? 0) / 1000).toFixed(1)}s ago)`,
  );
  await reportUntilDead(sim, target, report, before, deadline);
  await untilBackOnline(sim, target, report, before, deadline);
}

/** The target as the kill found it. */
interface Before {
  pid: number;
  restarts: number;
  deadDeclarations: number;
}

/** Milliseconds since the target's last heartbeat, as the last poll saw it; null before any. */
function heartbeatAge(target: Tracked): number | null {
  // The ledger's time counts the heartbeats the API coalesced; dead detection reads it too.
  const times = [target.state?.lastHeartbeat?.at, target.state?.heartbeatLedger.lastSeenAt]
    .filter((at): at is string => typeof at === 'string')
    .map((at) => Date.parse(at));
  return times.length === 0 ? null : Date.now() - Math.max(...times);
}

/**
 * Waits until the target is ready and its last heartbeat is older than dead detection's "recent"
 * window: a recent heartbeat makes dead detection answer `queued` (the box may just be busy).
 */
async function untilHeartbeatOld(sim: Simulation, target: Tracked, deadline: number): Promise<void> {
  const recentMs = defaultLifecycleConfig.recentHeartbeatMs;
  const oldEnoughMs = recentMs + KILL_MARGIN_MS;
  const beatMs = sim.options.runtimeHeartbeatMs;
  if (beatMs !== undefined && beatMs <= oldEnoughMs)
    throw new Error(
      `the runtimes heartbeat every ${beatMs / 1000}s (WL_SIM_HEARTBEAT_MS of the simulator), within dead ` +
        `detection's ${recentMs / 1000}s "recent heartbeat" window plus ${KILL_MARGIN_MS / 1000}s: a last ` +
        'heartbeat never gets old enough, so the kill cannot wait for one and dead detection would answer ' +
        `\`queued\`. Set WL_SIM_HEARTBEAT_MS above ${oldEnoughMs} for both \`npm start\` and the simulator, or ` +
        'pass --no-kill',
    );
  sim.say(
    `${sim.pad(target.id)} waiting until its last heartbeat is older than ${recentMs / 1000}s: a recent heartbeat ` +
      'makes dead detection answer `queued` to a failed dispatch (the box may just be busy)',
  );
  await waitUntil(
    sim,
    deadline,
    () =>
      `the last heartbeat of ${target.id} did not get older than ${recentMs / 1000}s while it stayed online ` +
      '(its runtime was restarted by the stack: it heartbeats at the WL_SIM_HEARTBEAT_MS of `npm start`, ' +
      `which must be above ${oldEnoughMs})`,
    () => {
      const age = heartbeatAge(target);
      return ready(sim, target) && (age === null || age > oldEnoughMs);
    },
  );
  const until = target.state?.restart.settleUntil;
  const settleLeft = until === null || until === undefined ? 0 : Date.parse(until) - Date.now();
  if (settleLeft > 0)
    sim.say(
      `${sim.pad(target.id)} its last restart's settle window ends in ${(settleLeft / 1000).toFixed(1)}s: until ` +
        'then a heartbeat since that restart still answers `queued`',
    );
}

/**
 * A dispatcher that cannot reach the box reports each failure, one every DISPATCH_MS, until the
 * target is declared dead: by the verdict of its own report, or by someone else (the watchdog,
 * another dispatcher).
 */
async function reportUntilDead(
  sim: Simulation,
  target: Tracked,
  report: KillReport,
  before: Before,
  deadline: number,
): Promise<void> {
  const { api, abort } = sim;
  while (!report.declaredDead) {
    sim.checkAbort();
    if (Date.now() > deadline)
      throw new TimeoutError(
        `${target.id} was not declared dead (verdicts: ${report.verdicts.map((v) => v.verdict).join(', ') || 'none'})`,
      );
    const sent = Date.now();
    try {
      const answer = await api.call('POST', `/workspaces/${target.id}/dispatch-failed`, {
        caller: DISPATCH_CALLER,
        error: 'connection refused',
      });
      const body = (
        typeof answer.body === 'object' && answer.body !== null ? answer.body : {}
      ) as Partial<DispatchVerdict>;
      if (typeof body.verdict === 'string') {
        report.verdicts.push({ verdict: body.verdict, detail: body.detail ?? '', atMs: Date.now() - sim.started });
        sim.say(`${sim.pad(target.id)} dispatch-failed → ${answer.status} ${body.verdict}: ${body.detail ?? ''}`);
        if (body.verdict === 'dead') report.declaredDead = true;
      } else {
        sim.say(`${sim.pad(target.id)} dispatch-failed → ${answer.status} ${errorText(answer.body)}`);
      }
    } catch (err) {
      sim.say(`${sim.pad(target.id)} dispatch-failed: no answer: ${describeError(err)}`);
    }
    if (report.declaredDead) break;
    await pollAll(sim);
    const declarations = target.state?.deadDetection.deadDeclarations ?? 0;
    if (declarations > before.deadDeclarations) {
      report.declaredDead = true;
      const last = target.state?.deadDetection.lastVerdict;
      sim.say(
        `${sim.pad(target.id)} declared dead by someone else (dead declarations ${before.deadDeclarations} → ` +
          `${declarations}; last verdict ${last?.verdict ?? '?'} by ${last?.requester ?? '?'}): no more ` +
          'failed-dispatch reports',
      );
      break;
    }
    // One report every DISPATCH_MS, however long the evaluation took.
    const wait = DISPATCH_MS - (Date.now() - sent);
    if (wait > 0) await sleep(wait, undefined, abort ? { signal: abort } : {}).catch(() => undefined);
  }
}

/** Watches the target restart (a new runtime process) and come back online after its dead declaration. */
async function untilBackOnline(
  sim: Simulation,
  target: Tracked,
  report: KillReport,
  before: Before,
  deadline: number,
): Promise<void> {
  await waitUntil(
    sim,
    deadline,
    () => {
      const s = target.state;
      return (
        `${target.id} did not come back after the dead declaration: status ${s?.status ?? 'unknown'}, ` +
        `restarts ${s?.restart.count ?? 0} (before ${before.restarts}), runtime pid ${target.pid ?? '-'} ` +
        `(killed ${before.pid}), dead declarations ${s?.deadDetection.deadDeclarations ?? 0}`
      );
    },
    () => {
      const s = target.state;
      if (s === null) return false;
      report.restarted = s.restart.count > before.restarts && !s.restart.inFlight;
      report.newPid = target.pid !== null && target.pid !== before.pid && processAlive(target.pid) ? target.pid : null;
      report.backOnline = report.restarted && ready(sim, target) && report.newPid !== null;
      return report.backOnline && s.deadDetection.deadDeclarations > before.deadDeclarations;
    },
  );
}
