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
 * `runSimulation` is the core, for tests; the CLI runs it when this file is invoked directly.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { LocalBoxDriver, processAlive } from '../activities/box/local.js';
import { RESTART_ID_FILE } from '../activities/box/ssh.js';
import {
  adminTokenPath,
  boxesDirFromEnv,
  dataDir as defaultDataDir,
  defaultRuntimeCommand,
  runtimeCommandFromEnv,
  simulatorReposDir,
  sshKeyDirFromEnv,
} from '../settings.js';
import { defaultLifecycleConfig } from '../workflows/config.js';
import type { DispatchVerdict } from '../workflows/definitions.js';
import type { WorkspaceView } from '../api/routes/workspaces.js';
import type { WorkspaceState } from '../workflows/state-machine.js';
import { describeError, errorText, readBody } from './http.js';
import { heartbeatMsFromEnv, TOKEN_FILE } from './runtime.js';
import { SimulatedSshBoxes } from './ssh.js';

const run = promisify(execFile);

export interface SimulationOptions {
  apiUrl: string;
  adminToken: string;
  workspaces: number;
  /** Plugins declared per workspace. */
  plugins: number;
  kill: boolean;
  /** Leave the workspaces and their runtimes running at exit. */
  keep: boolean;
  /** Upper bound on each phase. */
  phaseTimeoutMs: number;
  /** Plugin repositories go under `<dataDir>/simulator/repos`. */
  dataDir: string;
  boxesDir: string;
  runtimeCommand: string[];
  /**
   * Boxes reached over SSH: a throwaway sshd on a loopback port, a client key in `sshKeyDir`, and
   * each workspace's box settings set to it through the API.
   */
  ssh?: boolean;
  /** The worker's key directory (`WL_SSH_KEY_DIR` or `<data dir>/ssh-keys`); needed with `ssh`. */
  sshKeyDir?: string;
  /**
   * The heartbeat interval of the runtimes this process starts (its `WL_SIM_HEARTBEAT_MS`), when
   * known. At or below dead detection's "recent heartbeat" window (plus a margin) the kill phase
   * fails at once: a runtime that beats that often never has an old enough last heartbeat.
   */
  runtimeHeartbeatMs?: number;
  /** Aborting (Ctrl-C) stops the phases; cleanup still runs unless `keep`. */
  signal?: AbortSignal;
}

export interface ObservedTransition {
  from: string;
  to: string;
  cause: string;
  /** Milliseconds since the simulation started. */
  atMs: number;
}

export interface WorkspaceReport {
  id: string;
  boxDir: string;
  transitions: ObservedTransition[];
  status: string | null;
  pluginsInstalled: number;
  pluginsDeclared: number;
  pluginErrors: string[];
  restarts: number;
  lastRestartReason: string | null;
  runtimePid: number | null;
}

export interface KillReport {
  workspaceId: string;
  killedPid: number | null;
  newPid: number | null;
  verdicts: { verdict: string; detail: string; atMs: number }[];
  declaredDead: boolean;
  restarted: boolean;
  backOnline: boolean;
}

export interface PhaseReport {
  name: string;
  ok: boolean;
  ms: number;
}

export interface SimulationResult {
  ok: boolean;
  runId: string;
  /** One line per thing that did not happen (within the timeout), cleanup included. */
  failures: string[];
  /** The abort signal (Ctrl-C) stopped a phase; not counted as a failure. */
  interrupted: boolean;
  phases: PhaseReport[];
  workspaces: WorkspaceReport[];
  kill: KillReport | null;
}

export type Log = (line: string) => void;

export interface PluginRepo {
  name: string;
  dir: string;
  source: string;
}

/** How often the phases poll each workspace's state. */
const POLL_MS = 1_000;
/** How often the kill phase's dispatcher reports a failed dispatch. */
const DISPATCH_MS = 3_000;
/** The kill waits until the last heartbeat is this much older than the "recent" window. */
const KILL_MARGIN_MS = 1_000;
/** The `caller` of the simulator's failed-dispatch reports: the requester of the verdicts they get. */
const DISPATCH_CALLER = 'simulator';
/** How long cleanup waits for each workspace to be removed (a restart in flight finishes first). */
const REMOVE_TIMEOUT_MS = 30_000;

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

/** Plugins the workspace's reconcile reports installed. */
function installedCount(state: WorkspaceState): number {
  return Object.values(state.plugins).filter((p) => p.status === 'installed').length;
}

class TimeoutError extends Error {}
/** Ctrl-C (the abort signal): not a failure of the stack. */
class InterruptedError extends Error {}

/** A small admin client of the API. */
class Api {
  constructor(
    private readonly url: string,
    private readonly token: string,
  ) {}

  async call(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(`${this.url}${path}`, {
      method,
      headers,
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(20_000),
    });
    return { status: response.status, body: await readBody(response) };
  }

  async state(id: string): Promise<WorkspaceView> {
    const { status, body } = await this.call('GET', `/workspaces/${id}`);
    if (status !== 200) throw new Error(`GET /workspaces/${id}: ${status} ${errorText(body)}`);
    return body as WorkspaceView;
  }
}

interface Tracked {
  id: string;
  boxDir: string;
  state: WorkspaceView | null;
  pid: number | null;
  transitions: ObservedTransition[];
}

/**
 * Runs the phases against the API at `options.apiUrl` and, unless `keep`, cleans up; never throws
 * for a phase that failed (the result names it).
 *
 * The environment: the runtimes it starts (first boots) get this process's environment plus
 * `WL_API_URL = options.apiUrl`, passed to their box driver; it does not change `process.env`.
 * The runtimes the worker restarts (after a reconcile, after the kill) are started by the
 * worker's own box driver: they find the API through the worker's environment (`npm start` sets
 * `WL_API_URL` once its API listens; a test running the worker in process gives its driver
 * `runtimeEnv`), and the heartbeat interval there is the worker's `WL_SIM_HEARTBEAT_MS`.
 */
export async function runSimulation(options: SimulationOptions, log: Log = console.log): Promise<SimulationResult> {
  const started = Date.now();
  const runId = randomBytes(3).toString('hex');
  const recentMs = defaultLifecycleConfig.recentHeartbeatMs;
  const api = new Api(options.apiUrl.replace(/\/+$/, ''), options.adminToken);
  const driver = new LocalBoxDriver({
    root: options.boxesDir,
    runtimeCommand: options.runtimeCommand,
    runtimeEnv: { WL_API_URL: options.apiUrl },
  });
  const failures: string[] = [];
  const phases: PhaseReport[] = [];
  const tracked: Tracked[] = [];
  let kill: KillReport | null = null;
  let interrupted = false;
  // Set by the setup phase (an object, so the checker sees it change).
  const ssh: { boxes: SimulatedSshBoxes | null } = { boxes: null };
  // The sshd runs detached from this process: if it dies before its cleanup, the sshd goes with it.
  const abandonSsh = (): void => ssh.boxes?.abandon();
  const abort = options.signal;

  const elapsed = (at: number = Date.now()): string => `${((at - started) / 1000).toFixed(1).padStart(6)}s`;
  const say = (line: string, at?: number): void => log(`${elapsed(at)} ${line}`);
  const pad = (id: string): string => id.padEnd(Math.max(...tracked.map((t) => t.id.length), id.length) + 1);
  const pluginSummary = (state: WorkspaceState): string => {
    const installed = installedCount(state);
    const pending = state.reconcile.lastFinishedAt === null ? '-' : String(state.pluginsPending);
    return `plugins ${installed}/${options.plugins} pending ${pending}`;
  };

  // --- watching: one poll of every workspace, printing each observed change ----------------------
  const pollErrors = new Map<string, string>();
  async function pollOne(t: Tracked, note: (line: string, at?: number) => void): Promise<void> {
    const pid = await driver.runtimePid(t.id);
    if (pid !== t.pid) {
      note(`${pad(t.id)} runtime pid ${t.pid ?? '-'} → ${pid ?? '-'}`);
      t.pid = pid;
    }
    let next: WorkspaceView;
    try {
      next = await api.state(t.id);
    } catch (err) {
      const message = describeError(err);
      if (pollErrors.get(t.id) !== message) note(`${pad(t.id)} poll failed: ${message}`);
      pollErrors.set(t.id, message);
      return;
    }
    pollErrors.delete(t.id);
    const prev = t.state;
    t.state = next;
    const id = pad(t.id);

    const newTransitions = next.counters.transitions - (prev?.counters.transitions ?? 0);
    const fresh = next.recentTransitions.slice(0, Math.max(0, newTransitions)).reverse();
    if (newTransitions > next.recentTransitions.length)
      note(`${id} (${newTransitions - next.recentTransitions.length} transition(s) between polls not shown)`);
    for (const change of fresh) {
      const at = Date.parse(change.at);
      t.transitions.push({ from: change.from, to: change.to, cause: change.cause, atMs: at - started });
      note(`${id} ${change.from} → ${change.to}  ${pluginSummary(next)}  (${change.cause})`, at);
    }

    const pluginLine = (state: WorkspaceState | null): string =>
      state === null
        ? ''
        : Object.entries(state.plugins)
            .map(([name, p]) => `${name}:${p.status}:${p.via ?? ''}:${p.revision ?? ''}:${p.error ?? ''}`)
            .sort()
            .join(',');
    if (pluginLine(next) !== pluginLine(prev) && Object.keys(next.plugins).length > 0) {
      const parts = Object.entries(next.plugins)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([name, p]) =>
          p.status === 'installed'
            ? `${name} ${p.via ?? ''} ${(p.revision ?? '').slice(0, 7)}`
            : `${name} FAILED (${p.error ?? 'unknown'})`,
        );
      note(`${id} reconcile: ${pluginSummary(next)}: ${parts.join(', ')}`);
    }
    if (next.restart.count !== (prev?.restart.count ?? 0))
      note(
        `${id} restart #${next.restart.count} by ${next.restart.lastRequester ?? '?'}: ${next.restart.lastReason ?? ''}`,
      );
    if (next.restart.lastError !== null && next.restart.lastError !== prev?.restart.lastError)
      note(`${id} restart failed: ${next.restart.lastError}`);
    if (next.reconcile.lastError !== null && next.reconcile.lastError !== prev?.reconcile.lastError)
      note(`${id} reconcile failed: ${next.reconcile.lastError}`);
    if (next.counters.registers !== (prev?.counters.registers ?? 0))
      note(`${id} runtime registered (register #${next.counters.registers}, ${next.agentCard?.skills ?? 0} skill(s))`);
    // The simulator's own reports print their verdict when the answer comes back.
    const verdict = next.deadDetection.lastVerdict;
    if (verdict !== null && verdict.at !== prev?.deadDetection.lastVerdict?.at && verdict.requester !== DISPATCH_CALLER)
      note(`${id} dead detection: ${verdict.verdict} (${verdict.requester}): ${verdict.detail}`);
    if (next.counters.rejected !== (prev?.counters.rejected ?? 0))
      note(`${id} payload rejected: ${next.recentRejections[0]?.reason ?? '?'}`);
  }

  /** Polls every workspace; pollOne reports its own errors, so this never rejects. */
  async function pollAll(): Promise<void> {
    // Lines of one poll in time order: transitions carry the workflow's own timestamps.
    const lines: { at: number; line: string }[] = [];
    const note = (line: string, at: number = Date.now()): void => void lines.push({ at, line });
    await Promise.all(tracked.map((t) => pollOne(t, note)));
    lines.sort((a, b) => a.at - b.at).forEach(({ at, line }) => say(line, at));
  }

  function checkAbort(): void {
    if (abort?.aborted) throw new InterruptedError('interrupted');
  }

  /** Polls until `done` holds or the phase deadline passes; `what` names what did not happen. */
  async function waitUntil(deadline: number, what: () => string, done: () => boolean): Promise<void> {
    for (;;) {
      checkAbort();
      await pollAll();
      if (done()) return;
      if (Date.now() > deadline) throw new TimeoutError(what());
      await sleep(POLL_MS, undefined, abort ? { signal: abort } : {}).catch(() => undefined);
    }
  }

  async function phase(name: string, work: (deadline: number) => Promise<void>): Promise<boolean> {
    const begin = Date.now();
    say(`== ${name}`);
    try {
      await work(begin + options.phaseTimeoutMs);
      phases.push({ name, ok: true, ms: Date.now() - begin });
      say(`== ${name}: done in ${((Date.now() - begin) / 1000).toFixed(1)}s`);
      return true;
    } catch (err) {
      phases.push({ name, ok: false, ms: Date.now() - begin });
      if (err instanceof InterruptedError) {
        interrupted = true;
        say(`== ${name}: interrupted`);
        return false;
      }
      const message =
        err instanceof TimeoutError ? `within ${options.phaseTimeoutMs / 1000}s, ${err.message}` : describeError(err);
      failures.push(`${name}: ${message}`);
      say(`== ${name}: FAILED: ${message}`);
      return false;
    }
  }

  // --- the phases ----------------------------------------------------------------------------------
  const ready = (t: Tracked): boolean => {
    const s = t.state;
    if (s === null || s.status !== 'online') return false;
    return (
      installedCount(s) === options.plugins &&
      !s.restart.inFlight &&
      s.restart.followUp === null &&
      !s.reconcile.running
    );
  };
  const notReady = (): string =>
    'not every workspace came online with all plugins installed: ' +
    tracked
      .filter((t) => !ready(t))
      .map((t) => {
        const lastError = pollErrors.get(t.id);
        const detail = t.state ? `, ${pluginSummary(t.state)}` : '';
        return `${t.id} is ${t.state?.status ?? 'unknown'}${detail}${lastError ? ` (last poll: ${lastError})` : ''}`;
      })
      .join('; ');

  let ok = await phase('setup: plugin repositories, workspaces, boxes', async () => {
    const health = await fetch(`${options.apiUrl}/healthz`, { signal: AbortSignal.timeout(5_000) }).catch(
      (err: unknown) => {
        throw new Error(`API at ${options.apiUrl} not reachable (is \`npm start\` running?): ${describeError(err)}`);
      },
    );
    if (!health.ok) throw new Error(`API at ${options.apiUrl}/healthz answered ${health.status}`);
    const probe = await api.call('GET', '/workspaces?limit=1');
    if (probe.status === 401)
      throw new Error(`the API refused the admin token (WL_ADMIN_TOKEN or ${adminTokenPath()})`);

    const names = Array.from({ length: options.plugins }, (_, i) => `sim-plugin-${i + 1}`);
    const repos = await ensurePluginRepos(simulatorReposDir(options.dataDir), names);
    for (const repo of repos) say(`plugin ${repo.name}: ${repo.source}`);

    const keyDir = options.sshKeyDir ?? sshKeyDirFromEnv();
    const sshBoxes = options.ssh
      ? await SimulatedSshBoxes.start({
          runId,
          dir: join(options.dataDir, 'simulator'),
          keyDir,
          apiUrl: options.apiUrl,
          runtimeCommand: options.runtimeCommand,
          ...(options.runtimeHeartbeatMs === undefined ? {} : { heartbeatMs: options.runtimeHeartbeatMs }),
          log: (line) => say(line),
        })
      : null;
    ssh.boxes = sshBoxes;
    if (sshBoxes !== null) {
      process.once('exit', abandonSsh);
      const { sshd } = sshBoxes;
      say(
        `--ssh: the boxes are reached over SSH: sshd pid ${sshd.pid} on 127.0.0.1:${sshd.port} (host key ` +
          `${sshd.hostKey.slice(0, 32)}…, log ${sshd.log}), user ${sshBoxes.user}, key ${sshBoxes.keyRef} in ${keyDir}; ` +
          'every boot, restart, probe, delivery, boot credential and stop goes over SSH',
      );
    }

    for (let i = 1; i <= options.workspaces; i++) {
      checkAbort();
      const id = `sim-${runId}-${i}`;
      const created = await api.call('POST', '/workspaces', {
        id,
        plugins: repos.map((r) => ({ name: r.name, source: r.source })),
      });
      if (created.status !== 201)
        throw new Error(`POST /workspaces ${id}: ${created.status} ${errorText(created.body)}`);
      // Tracked from here on, so cleanup removes it whatever fails next.
      tracked.push({ id, boxDir: driver.boxDir(id), state: null, pid: null, transitions: [] });
      const body = created.body as { auth_token?: unknown };
      if (typeof body.auth_token !== 'string') throw new Error(`POST /workspaces ${id}: no auth_token in the answer`);
      if (sshBoxes !== null) {
        const settings = sshBoxes.settingsFor(id, driver.boxDir(id));
        const set = await api.call('PUT', `/workspaces/${id}/box`, settings);
        if (set.status !== 200) throw new Error(`PUT /workspaces/${id}/box: ${set.status} ${errorText(set.body)}`);
      }
      const boxDir = await driver.createBox(id);
      await writeFile(join(boxDir, TOKEN_FILE), `${body.auth_token}\n`, { mode: 0o600 });
      if (sshBoxes === null) {
        await driver.startRuntime(id);
        say(`${pad(id)} created with ${repos.length} plugin(s); box ${boxDir}; runtime started`);
      } else {
        // The first boot goes through the same restart command as every later one: a box whose
        // settings do not work fails here, naming why, and every runtime starts the same way.
        await sshBoxes.provision(id, boxDir);
        await sshBoxes.driver.restart(id, SSH_BOOT_RESTART_ID);
        say(
          `${pad(id)} created with ${repos.length} plugin(s); box ${boxDir}, reached over SSH; ` +
            `runtime started over SSH (pid ${(await driver.runtimePid(id)) ?? '-'})`,
        );
      }
    }
  });

  if (ok)
    ok = await phase('online: every workspace online with its plugins installed', (deadline) =>
      waitUntil(deadline, notReady, () => tracked.every(ready)),
    );

  if (ok && options.kill && tracked[0] !== undefined) {
    const target = tracked[0];
    const report: KillReport = {
      workspaceId: target.id,
      killedPid: null,
      newPid: null,
      verdicts: [],
      declaredDead: false,
      restarted: false,
      backOnline: false,
    };
    kill = report;
    ok = await phase(`kill: ${target.id} dies, is declared dead, restarts`, async (deadline) => {
      // A recent heartbeat makes dead detection answer `queued` (the box may just be busy), so the
      // kill waits until the last one is older than the "recent" window.
      const oldEnoughMs = recentMs + KILL_MARGIN_MS;
      const beatMs = options.runtimeHeartbeatMs;
      if (beatMs !== undefined && beatMs <= oldEnoughMs)
        throw new Error(
          `the runtimes heartbeat every ${beatMs / 1000}s (WL_SIM_HEARTBEAT_MS of the simulator), within dead ` +
            `detection's ${recentMs / 1000}s "recent heartbeat" window plus ${KILL_MARGIN_MS / 1000}s: a last ` +
            'heartbeat never gets old enough, so the kill cannot wait for one and dead detection would answer ' +
            `\`queued\`. Set WL_SIM_HEARTBEAT_MS above ${oldEnoughMs} for both \`npm start\` and the simulator, or ` +
            'pass --no-kill',
        );
      const heartbeatAge = (): number | null => {
        // The ledger's time counts the heartbeats the API coalesced; dead detection reads it too.
        const times = [target.state?.lastHeartbeat?.at, target.state?.heartbeatLedger.lastSeenAt]
          .filter((at): at is string => typeof at === 'string')
          .map((at) => Date.parse(at));
        return times.length === 0 ? null : Date.now() - Math.max(...times);
      };
      const settleLeft = (): number => {
        const until = target.state?.restart.settleUntil;
        return until === null || until === undefined ? 0 : Date.parse(until) - Date.now();
      };
      say(
        `${pad(target.id)} waiting until its last heartbeat is older than ${recentMs / 1000}s: a recent heartbeat ` +
          'makes dead detection answer `queued` to a failed dispatch (the box may just be busy)',
      );
      await waitUntil(
        deadline,
        () =>
          `the last heartbeat of ${target.id} did not get older than ${recentMs / 1000}s while it stayed online ` +
          '(its runtime was restarted by the stack: it heartbeats at the WL_SIM_HEARTBEAT_MS of `npm start`, ' +
          `which must be above ${oldEnoughMs})`,
        () => {
          const age = heartbeatAge();
          return ready(target) && (age === null || age > oldEnoughMs);
        },
      );
      if (settleLeft() > 0)
        say(
          `${pad(target.id)} its last restart's settle window ends in ${(settleLeft() / 1000).toFixed(1)}s: until ` +
            'then a heartbeat since that restart still answers `queued`',
        );
      const pid = await driver.runtimePid(target.id);
      if (pid === null || !processAlive(pid))
        throw new Error(`no running runtime process for ${target.id} (${driver.boxDir(target.id)}/runtime.pid)`);
      const restartsBefore = target.state?.restart.count ?? 0;
      const deadBefore = target.state?.deadDetection.deadDeclarations ?? 0;
      process.kill(pid, 'SIGKILL');
      report.killedPid = pid;
      say(
        `${pad(target.id)} SIGKILL runtime pid ${pid} (last heartbeat ${((heartbeatAge() ?? 0) / 1000).toFixed(1)}s ago)`,
      );

      // A dispatcher that cannot reach the box reports each failure until it is declared dead: by
      // the verdict of its own report, or by someone else (the watchdog, another dispatcher).
      while (!report.declaredDead) {
        checkAbort();
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
            report.verdicts.push({ verdict: body.verdict, detail: body.detail ?? '', atMs: Date.now() - started });
            say(`${pad(target.id)} dispatch-failed → ${answer.status} ${body.verdict}: ${body.detail ?? ''}`);
            if (body.verdict === 'dead') report.declaredDead = true;
          } else {
            say(`${pad(target.id)} dispatch-failed → ${answer.status} ${errorText(answer.body)}`);
          }
        } catch (err) {
          say(`${pad(target.id)} dispatch-failed: no answer: ${describeError(err)}`);
        }
        if (report.declaredDead) break;
        await pollAll();
        const declarations = target.state?.deadDetection.deadDeclarations ?? 0;
        if (declarations > deadBefore) {
          report.declaredDead = true;
          const last = target.state?.deadDetection.lastVerdict;
          say(
            `${pad(target.id)} declared dead by someone else (dead declarations ${deadBefore} → ${declarations}; ` +
              `last verdict ${last?.verdict ?? '?'} by ${last?.requester ?? '?'}): no more failed-dispatch reports`,
          );
          break;
        }
        // One report every DISPATCH_MS, however long the evaluation took.
        const wait = DISPATCH_MS - (Date.now() - sent);
        if (wait > 0) await sleep(wait, undefined, abort ? { signal: abort } : {}).catch(() => undefined);
      }

      await waitUntil(
        deadline,
        () => {
          const s = target.state;
          return (
            `${target.id} did not come back after the dead declaration: status ${s?.status ?? 'unknown'}, ` +
            `restarts ${s?.restart.count ?? 0} (before ${restartsBefore}), runtime pid ${target.pid ?? '-'} ` +
            `(killed ${pid}), dead declarations ${s?.deadDetection.deadDeclarations ?? 0}`
          );
        },
        () => {
          const s = target.state;
          if (s === null) return false;
          report.restarted = s.restart.count > restartsBefore && !s.restart.inFlight;
          report.newPid = target.pid !== null && target.pid !== pid && processAlive(target.pid) ? target.pid : null;
          report.backOnline = report.restarted && ready(target) && report.newPid !== null;
          return report.backOnline && s.deadDetection.deadDeclarations > deadBefore;
        },
      );
    });
  }

  // --- summary and cleanup -------------------------------------------------------------------------
  await pollAll();
  const workspaces: WorkspaceReport[] = tracked.map((t) => {
    const s = t.state;
    return {
      id: t.id,
      boxDir: t.boxDir,
      transitions: t.transitions,
      status: s?.status ?? null,
      pluginsInstalled: s ? installedCount(s) : 0,
      pluginsDeclared: options.plugins,
      pluginErrors: s
        ? Object.entries(s.plugins).flatMap(([name, p]) => (p.error !== null ? [`${name}: ${p.error}`] : []))
        : [],
      restarts: s?.restart.count ?? 0,
      lastRestartReason: s?.restart.lastReason ?? null,
      runtimePid: t.pid,
    };
  });
  say('== summary');
  for (const w of workspaces) {
    say(
      `${pad(w.id)} ${(w.status ?? 'unknown').padEnd(12)} plugins ${w.pluginsInstalled}/${w.pluginsDeclared} installed  ` +
        `restarts ${w.restarts}  last restart: ${w.lastRestartReason ?? '-'}  runtime pid ${w.runtimePid ?? '-'}`,
    );
    for (const error of w.pluginErrors) say(`${pad(w.id)}   plugin error: ${error}`);
  }
  if (kill !== null) {
    say(
      `kill: ${kill.workspaceId} pid ${kill.killedPid ?? '-'} → verdicts ${kill.verdicts.map((v) => v.verdict).join(', ') || 'none'}; ` +
        `declared dead: ${kill.declaredDead ? 'yes' : 'no'}; restarted: ${kill.restarted ? 'yes' : 'no'}; ` +
        `back online with pid ${kill.newPid ?? '-'}: ${kill.backOnline ? 'yes' : 'no'}`,
    );
  }
  for (const p of phases)
    say(`phase ${p.ok ? 'ok    ' : 'FAILED'} ${(p.ms / 1000).toFixed(1).padStart(6)}s  ${p.name}`);

  const sshBoxes = ssh.boxes;
  if (sshBoxes !== null) await sayOverSsh(sshBoxes, tracked, say, pad);

  if (options.keep) {
    say(`--keep: leaving ${tracked.length} workspace(s) and their runtimes running`);
  } else if (tracked.length > 0) {
    failures.push(...(await cleanup(tracked, api, driver, say, pad, ssh.boxes !== null)));
  }
  if (sshBoxes !== null) {
    process.off('exit', abandonSsh);
    if (options.keep) {
      await sshBoxes.leave();
      say(
        `--keep: leaving the sshd running for the worker (pid ${sshBoxes.sshd.pid}, 127.0.0.1:${sshBoxes.sshd.port}, ` +
          `its files in ${sshBoxes.dir}) and the key ${sshBoxes.keyFile}; stop it with \`kill ${sshBoxes.sshd.pid}\` ` +
          'and delete both once the workspaces are gone',
      );
    } else {
      const problems = await sshBoxes.close();
      for (const problem of problems) say(`--ssh cleanup FAILED: ${problem}`);
      if (problems.length === 0) say(`--ssh: sshd stopped; key ${sshBoxes.keyFile} and ${sshBoxes.dir} deleted`);
      failures.push(...problems.map((problem) => `--ssh cleanup: ${problem}`));
    }
  }

  return { ok: failures.length === 0 && !interrupted, runId, failures, interrupted, phases, workspaces, kill };
}

/** The restart id of an SSH box's first boot, which the simulator does itself. */
const SSH_BOOT_RESTART_ID = 'simulator-boot';

/**
 * What shows the boxes were reached over SSH: the sshd's logins, and in each box the restarts
 * the SSH driver recorded (`box-events.log`, `.restart-id`) and the restart command's output.
 */
async function sayOverSsh(
  ssh: SimulatedSshBoxes,
  tracked: Tracked[],
  say: (line: string) => void,
  pad: (id: string) => string,
): Promise<void> {
  say(`--ssh: the sshd accepted ${await ssh.logins()} login(s) (${ssh.sshd.log})`);
  for (const t of tracked) {
    const events = await readFile(join(t.boxDir, 'box-events.log'), 'utf8').catch(() => '');
    const restarts = events.split('\n').filter((line) => / restart /.test(line) && !line.endsWith(SSH_BOOT_RESTART_ID));
    const last = (await readFile(join(t.boxDir, RESTART_ID_FILE), 'utf8').catch(() => '')).trim();
    const log = (await readFile(join(t.boxDir, 'restart.log'), 'utf8').catch(() => '')).trim().split('\n').pop();
    say(
      `${pad(t.id)} restarts by the worker over SSH: ${restarts.length}; ${RESTART_ID_FILE} ${last || '-'}; ` +
        `restart.log: ${log || '-'}`,
    );
  }
}

/**
 * Deprovisions each workspace: DELETE, then waits until it is removed with no restart in flight
 * (a restart still running would start its runtime again), stops its runtime and deletes its box
 * folder. Says what it did for each; returns one line per thing that failed.
 */
async function cleanup(
  tracked: Tracked[],
  api: Api,
  driver: LocalBoxDriver,
  say: (line: string) => void,
  pad: (id: string) => string,
  overSsh = false,
): Promise<string[]> {
  say('== cleanup: deprovisioning the simulated workspaces');
  const failed = await Promise.all(
    tracked.map(async (t) => {
      const problems: string[] = [];
      const removal = await removeWorkspace(api, t.id);
      if (removal !== null) problems.push(removal);
      // The worker stops a removed workspace's box just after it reads as removed: over SSH, that
      // stop is part of what is shown, so it gets the time to happen before the simulator's own.
      let stoppedBy = '';
      if (overSsh && removal === null) {
        const deadline = Date.now() + WORKER_STOP_WAIT_MS;
        // A runtime that saw its workspace removed may have exited by itself, leaving nothing to
        // stop; the worker's stop records itself a moment after its runtime is gone.
        let goneSince: number | null = null;
        while (Date.now() < deadline && !(await stoppedOverSsh(t.boxDir))) {
          if ((await driver.liveRuntimePid(t.id)) === null) goneSince ??= Date.now();
          if (goneSince !== null && Date.now() - goneSince > 2_000) break;
          await sleep(200);
        }
        if (await stoppedOverSsh(t.boxDir)) stoppedBy = ' by the worker over SSH';
      }
      try {
        const stopped = await driver.stopRuntime(t.id);
        if (overSsh && stoppedBy === '' && !stopped) stoppedBy = ' (it had exited by itself)';
      } catch (err) {
        problems.push(`stopping its runtime failed: ${describeError(err)}`);
      }
      try {
        await rm(t.boxDir, { recursive: true, force: true });
      } catch (err) {
        problems.push(`deleting its box ${t.boxDir} failed: ${describeError(err)}`);
      }
      if (problems.length === 0) say(`${pad(t.id)} removed; runtime stopped${stoppedBy}; box ${t.boxDir} deleted`);
      for (const problem of problems) say(`${pad(t.id)} cleanup FAILED: ${problem}`);
      return problems.map((problem) => `cleanup of ${t.id}: ${problem}`);
    }),
  );
  const failures = failed.flat();
  say(`== cleanup: ${failures.length === 0 ? 'done' : `FAILED (${failures.length} problem(s))`}`);
  return failures;
}

/** How long cleanup waits for the worker's stop of a removed workspace's box reached over SSH. */
const WORKER_STOP_WAIT_MS = 10_000;

/** The SSH driver recorded a stop in the box (`event 'stop'` in `box-events.log`). */
async function stoppedOverSsh(boxDir: string): Promise<boolean> {
  const events = await readFile(join(boxDir, 'box-events.log'), 'utf8').catch(() => '');
  return / stop$/m.test(events);
}

/** DELETE, then wait until GET says 404 or removed with no restart in flight; null when it was, else why not. */
async function removeWorkspace(api: Api, id: string): Promise<string | null> {
  try {
    const answer = await api.call('DELETE', `/workspaces/${id}`);
    // 404: already removed (or never made it to the database).
    if (answer.status !== 202 && answer.status !== 404)
      return `DELETE answered ${answer.status} ${errorText(answer.body)}`;
  } catch (err) {
    return `DELETE failed: ${describeError(err)}`;
  }
  const deadline = Date.now() + REMOVE_TIMEOUT_MS;
  for (;;) {
    let last: string;
    try {
      const { status, body } = await api.call('GET', `/workspaces/${id}`);
      if (status === 404) return null;
      if (status === 200) {
        const state = body as WorkspaceState;
        if (state.status === 'removed' && !state.restart.inFlight) return null;
        last = `status ${state.status}${state.restart.inFlight ? ', a restart in flight' : ''}`;
      } else {
        last = `GET answered ${status} ${errorText(body)}`;
      }
    } catch (err) {
      last = `GET failed: ${describeError(err)}`;
    }
    if (Date.now() > deadline)
      return (
        `not removed within ${REMOVE_TIMEOUT_MS / 1000}s (last: ${last}); its runtime was stopped anyway, ` +
        'but a restart still in flight may start it again'
      );
    await sleep(500);
  }
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
