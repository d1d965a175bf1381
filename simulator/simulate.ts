/**
 * The simulator (`npm run simulate`): drives a running stack (`npm start`) through a workspace's
 * whole life with simulated runtimes (simulator/runtime.ts) in local boxes, and prints what it
 * observes:
 *   1. makes M local git plugin repositories and creates N workspaces declaring them;
 *   2. provisions each box (local box driver) and watches provisioning → online → reconcile
 *      delivers → one restart → online, until every plugin is installed;
 *   3. kills one runtime (SIGKILL) and, as a dispatcher that cannot reach it, reports failed
 *      dispatches until dead detection declares it dead; watches it restart and come back;
 *   4. deprovisions what it created (unless --keep).
 * `runSimulation` is the core, for tests; the CLI runs it when this file is invoked directly.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { LocalBoxDriver } from '../activities/box/local.js';
import { dataDir as defaultDataDir } from '../activities/settings.js';
import type { DispatchVerdict } from '../workflows/definitions.js';
import type { WorkspaceState } from '../workflows/state-machine.js';
import { TOKEN_FILE } from './runtime.js';

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
  /** Defaults to a random id; workspace ids are `sim-<runId>-<i>`. */
  runId?: string;
  pollIntervalMs?: number;
  dispatchIntervalMs?: number;
  /** Dead detection's "recent heartbeat" window: the kill waits until the last beat is older. */
  recentHeartbeatMs?: number;
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
  /** One line per thing that did not happen (within the timeout). */
  failures: string[];
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

const gitIdentity = ['-c', 'user.name=workspace-lifecycle simulator', '-c', 'user.email=simulator@workspace-lifecycle'];

/** The runtime the boxes run: `$WL_RUNTIME_COMMAND`, else simulator/runtime.ts under tsx (as `npm start` sets it). */
export function runtimeCommandFromEnv(env: NodeJS.ProcessEnv = process.env): string[] {
  const configured = env['WL_RUNTIME_COMMAND'];
  if (configured) {
    const parsed: unknown = JSON.parse(configured);
    const parts: unknown[] = Array.isArray(parsed) ? parsed : [];
    const command = parts.filter((part): part is string => typeof part === 'string');
    if (command.length === 0 || command.length !== parts.length)
      throw new Error(`WL_RUNTIME_COMMAND must be a JSON array of strings, got ${configured}`);
    return command;
  }
  return [
    process.execPath,
    '--import',
    import.meta.resolve('tsx/esm'),
    fileURLToPath(new URL('./runtime.ts', import.meta.url)),
  ];
}

/** `WL_ADMIN_TOKEN`, else the token `npm start` wrote to `<data dir>/admin-token`. */
export async function adminTokenFromEnv(env: NodeJS.ProcessEnv, dataDir: string): Promise<string> {
  const fromEnv = env['WL_ADMIN_TOKEN'];
  if (fromEnv) return fromEnv;
  const file = join(dataDir, 'admin-token');
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

class TimeoutError extends Error {}

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
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = text === '' ? null : JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    return { status: response.status, body: parsed };
  }

  async state(id: string): Promise<WorkspaceState> {
    const { status, body } = await this.call('GET', `/workspaces/${id}`);
    if (status !== 200) throw new Error(`GET /workspaces/${id}: ${status} ${errorText(body)}`);
    return body as WorkspaceState;
  }
}

function errorText(body: unknown): string {
  if (typeof body === 'object' && body !== null && 'error' in body && typeof body.error === 'string') {
    const issues = 'issues' in body && Array.isArray(body.issues) ? ` ${JSON.stringify(body.issues)}` : '';
    return body.error + issues;
  }
  return typeof body === 'string' ? body.slice(0, 300) : JSON.stringify(body);
}

function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause;
  return cause instanceof Error ? `${err.message}: ${cause.message}` : err.message;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

interface Tracked {
  id: string;
  boxDir: string;
  state: WorkspaceState | null;
  pid: number | null;
  transitions: ObservedTransition[];
}

export async function runSimulation(options: SimulationOptions, log: Log = console.log): Promise<SimulationResult> {
  const started = Date.now();
  const runId = options.runId ?? randomBytes(3).toString('hex');
  const pollMs = options.pollIntervalMs ?? 1_000;
  const dispatchMs = options.dispatchIntervalMs ?? 3_000;
  const recentMs = options.recentHeartbeatMs ?? 15_000;
  const api = new Api(options.apiUrl.replace(/\/+$/, ''), options.adminToken);
  const driver = new LocalBoxDriver({ root: options.boxesDir, runtimeCommand: options.runtimeCommand });
  const failures: string[] = [];
  const phases: PhaseReport[] = [];
  const tracked: Tracked[] = [];
  let kill: KillReport | null = null;
  const abort = options.signal;

  const elapsed = (at: number = Date.now()): string => `${((at - started) / 1000).toFixed(1).padStart(6)}s`;
  const say = (line: string, at?: number): void => log(`${elapsed(at)} ${line}`);
  const pad = (id: string): string => id.padEnd(Math.max(...tracked.map((t) => t.id.length), id.length) + 1);
  const pluginSummary = (state: WorkspaceState): string => {
    const installed = Object.values(state.plugins).filter((p) => p.status === 'installed').length;
    const pending = state.reconcile.lastFinishedAt === null ? '-' : String(state.pluginsPending);
    return `plugins ${installed}/${options.plugins} pending ${pending}`;
  };

  // --- watching: one poll of every workspace, printing each observed change ----------------------
  async function readPid(t: Tracked): Promise<number | null> {
    const text = await readFile(join(t.boxDir, 'runtime.pid'), 'utf8').catch(() => null);
    const pid = text === null ? NaN : Number(text);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  }

  const pollErrors = new Map<string, string>();
  async function pollOne(t: Tracked, note: (line: string, at?: number) => void): Promise<void> {
    const pid = await readPid(t);
    if (pid !== t.pid) {
      note(`${pad(t.id)} runtime pid ${t.pid ?? '-'} → ${pid ?? '-'}`);
      t.pid = pid;
    }
    let next: WorkspaceState;
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
    const verdict = next.deadDetection.lastVerdict;
    if (verdict !== null && verdict.at !== prev?.deadDetection.lastVerdict?.at)
      note(`${id} dead detection: ${verdict.verdict} (${verdict.requester}): ${verdict.detail}`);
    if (next.counters.rejected !== (prev?.counters.rejected ?? 0))
      note(`${id} payload rejected: ${next.recentRejections[0]?.reason ?? '?'}`);
  }

  let polling = false;
  async function pollAll(): Promise<void> {
    if (polling) return;
    polling = true;
    try {
      // Lines of one poll in time order: transitions carry the workflow's own timestamps.
      const lines: { at: number; line: string }[] = [];
      const note = (line: string, at: number = Date.now()): void => void lines.push({ at, line });
      await Promise.all(tracked.map((t) => pollOne(t, note)));
      lines.sort((a, b) => a.at - b.at).forEach(({ at, line }) => say(line, at));
    } finally {
      polling = false;
    }
  }

  function checkAbort(): void {
    if (abort?.aborted) throw new Error('interrupted');
  }

  /** Polls until `done` holds or the phase deadline passes; `what` names what did not happen. */
  async function waitUntil(deadline: number, what: () => string, done: () => boolean): Promise<void> {
    for (;;) {
      checkAbort();
      await pollAll();
      if (done()) return;
      if (Date.now() > deadline) throw new TimeoutError(what());
      await sleep(pollMs, undefined, abort ? { signal: abort } : {}).catch(() => undefined);
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
    const installed = Object.values(s.plugins).filter((p) => p.status === 'installed').length;
    return installed === options.plugins && !s.restart.inFlight && s.restart.followUp === null && !s.reconcile.running;
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

  // The runtimes this process starts find the API here (the driver spawns them with process.env).
  process.env['WL_API_URL'] = options.apiUrl;

  let ok = await phase('setup: plugin repositories, workspaces, boxes', async () => {
    const health = await fetch(`${options.apiUrl}/healthz`, { signal: AbortSignal.timeout(5_000) }).catch(
      (err: unknown) => {
        throw new Error(`API at ${options.apiUrl} not reachable (is \`npm start\` running?): ${describeError(err)}`);
      },
    );
    if (!health.ok) throw new Error(`API at ${options.apiUrl}/healthz answered ${health.status}`);
    const probe = await api.call('GET', '/workspaces?limit=1');
    if (probe.status === 401)
      throw new Error('the API refused the admin token (WL_ADMIN_TOKEN or <data dir>/admin-token)');

    const names = Array.from({ length: options.plugins }, (_, i) => `sim-plugin-${i + 1}`);
    const repos = await ensurePluginRepos(join(options.dataDir, 'simulator', 'repos'), names);
    for (const repo of repos) say(`plugin ${repo.name}: ${repo.source}`);

    for (let i = 1; i <= options.workspaces; i++) {
      checkAbort();
      const id = `sim-${runId}-${i}`;
      const created = await api.call('POST', '/workspaces', {
        id,
        plugins: repos.map((r) => ({ name: r.name, source: r.source })),
      });
      if (created.status !== 201)
        throw new Error(`POST /workspaces ${id}: ${created.status} ${errorText(created.body)}`);
      const body = created.body as { auth_token?: unknown };
      if (typeof body.auth_token !== 'string') throw new Error(`POST /workspaces ${id}: no auth_token in the answer`);
      const boxDir = await driver.createBox(id);
      const t: Tracked = { id, boxDir, state: null, pid: null, transitions: [] };
      tracked.push(t);
      await writeFile(join(boxDir, TOKEN_FILE), `${body.auth_token}\n`, { mode: 0o600 });
      await driver.startRuntime(id);
      say(`${pad(id)} created with ${repos.length} plugin(s); box ${boxDir}; runtime started`);
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
      const heartbeatAge = (): number | null => {
        const at = target.state?.lastHeartbeat?.at;
        return at === undefined ? null : Date.now() - Date.parse(at);
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
        () => `the last heartbeat of ${target.id} did not get older than ${recentMs / 1000}s while it stayed online`,
        () => {
          const age = heartbeatAge();
          return ready(target) && (age === null || age > recentMs + 1_000);
        },
      );
      if (settleLeft() > 0)
        say(
          `${pad(target.id)} its last restart's settle window ends in ${(settleLeft() / 1000).toFixed(1)}s: until ` +
            'then a heartbeat since that restart still answers `queued`',
        );
      const pid = await readPid(target);
      if (pid === null || !pidAlive(pid)) throw new Error(`no running runtime process for ${target.id} (runtime.pid)`);
      const restartsBefore = target.state?.restart.count ?? 0;
      const deadBefore = target.state?.deadDetection.deadDeclarations ?? 0;
      process.kill(pid, 'SIGKILL');
      report.killedPid = pid;
      say(
        `${pad(target.id)} SIGKILL runtime pid ${pid} (last heartbeat ${((heartbeatAge() ?? 0) / 1000).toFixed(1)}s ago)`,
      );

      // A dispatcher that cannot reach the box reports each failure until the verdict is dead.
      while (!report.declaredDead) {
        checkAbort();
        if (Date.now() > deadline)
          throw new TimeoutError(
            `${target.id} was not declared dead (verdicts: ${report.verdicts.map((v) => v.verdict).join(', ') || 'none'})`,
          );
        const sent = Date.now();
        try {
          const answer = await api.call('POST', `/workspaces/${target.id}/dispatch-failed`, {
            caller: 'simulator',
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
        // One report every dispatchMs, however long the evaluation took.
        const wait = dispatchMs - (Date.now() - sent);
        if (!report.declaredDead && wait > 0)
          await sleep(wait, undefined, abort ? { signal: abort } : {}).catch(() => undefined);
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
          report.newPid = target.pid !== null && target.pid !== pid && pidAlive(target.pid) ? target.pid : null;
          report.backOnline = report.restarted && ready(target) && report.newPid !== null;
          return report.backOnline && s.deadDetection.deadDeclarations > deadBefore;
        },
      );
    });
  }

  // --- summary and cleanup -------------------------------------------------------------------------
  await pollAll().catch(() => undefined);
  const workspaces: WorkspaceReport[] = tracked.map((t) => {
    const s = t.state;
    return {
      id: t.id,
      boxDir: t.boxDir,
      transitions: t.transitions,
      status: s?.status ?? null,
      pluginsInstalled: s ? Object.values(s.plugins).filter((p) => p.status === 'installed').length : 0,
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

  if (options.keep) {
    say(`--keep: leaving ${tracked.length} workspace(s) and their runtimes running`);
  } else if (tracked.length > 0) {
    await cleanup(tracked, api, driver, say, pad);
  }

  return { ok: failures.length === 0, runId, failures, phases, workspaces, kill };
}

/** Deprovisions each workspace, waits for its workflow to settle, then stops its runtime. */
async function cleanup(
  tracked: Tracked[],
  api: Api,
  driver: LocalBoxDriver,
  say: (line: string) => void,
  pad: (id: string) => string,
): Promise<void> {
  say('== cleanup: deprovisioning the simulated workspaces');
  await Promise.all(
    tracked.map(async (t) => {
      try {
        const answer = await api.call('DELETE', `/workspaces/${t.id}`);
        if (answer.status !== 202 && answer.status !== 404)
          say(`${pad(t.id)} DELETE answered ${answer.status} ${errorText(answer.body)}`);
        // A restart in flight would start the runtime again: wait for the workflow to finish it.
        const deadline = Date.now() + 30_000;
        while (Date.now() < deadline) {
          const s = await api.state(t.id).catch(() => null);
          if (s === null || (s.status === 'removed' && !s.restart.inFlight)) break;
          await sleep(500);
        }
      } catch (err) {
        say(`${pad(t.id)} DELETE failed: ${describeError(err)}`);
      }
      await driver.stopRuntime(t.id).catch((err: unknown) => say(`${pad(t.id)} stop failed: ${describeError(err)}`));
      say(`${pad(t.id)} removed; runtime stopped`);
    }),
  );
}

// --- CLI -----------------------------------------------------------------------------------------

const usage = `usage: npm run simulate -- [options]
  --workspaces N   workspaces to create (default 3)
  --plugins M      plugins declared per workspace (default 2)
  --no-kill        skip the kill / dead-detection phase
  --api URL        the API (default $WL_API_URL or http://127.0.0.1:8080)
  --keep           leave the workspaces running at exit
  --timeout S      seconds allowed for each phase (default 120)
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
  const dataDir = defaultDataDir(env);
  return {
    apiUrl: values.api.replace(/\/+$/, ''),
    adminToken: await adminTokenFromEnv(env, dataDir),
    workspaces: count('workspaces', values.workspaces, 1),
    plugins: count('plugins', values.plugins, 0),
    kill: values.kill,
    keep: values.keep,
    phaseTimeoutMs: count('timeout', values.timeout, 1) * 1000,
    dataDir,
    boxesDir: resolve(env['WL_BOXES_DIR'] ?? join(dataDir, 'boxes')),
    runtimeCommand: runtimeCommandFromEnv(env),
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
      console.error('simulate: second Ctrl-C: exiting without cleanup');
      process.exit(130);
    }
    console.error(`simulate: Ctrl-C: stopping${options.keep ? '' : ' and cleaning up (Ctrl-C again to skip)'}`);
    interrupt.abort();
  });
  console.log(
    `simulate: ${options.workspaces} workspace(s) × ${options.plugins} plugin(s) against ${options.apiUrl}` +
      `${options.kill ? ', with a kill' : ''}; boxes in ${options.boxesDir}`,
  );
  const result = await runSimulation({ ...options, signal: interrupt.signal });
  if (result.ok) {
    console.log('simulate: every phase succeeded');
    process.exit(0);
  }
  for (const failure of result.failures) console.error(`simulate: did not happen: ${failure}`);
  process.exit(1);
}
