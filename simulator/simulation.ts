/**
 * What every phase of a simulation shares: the options, the API client, the workspaces it made
 * (`tracked`), what it has found so far (failures, phase reports), and how it says things (each
 * line stamped with the seconds since the simulation started).
 */
import { randomBytes } from 'node:crypto';
import { LocalBoxDriver } from '../activities/box/local.js';
import type { WorkspaceView } from '../api/routes/workspaces.js';
import { describeError, errorText, readBody } from './http.js';
import type { SimulatedSshBoxes } from './ssh.js';

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

/** A phase gave up waiting: what did not happen is its message. */
export class TimeoutError extends Error {}
/** Ctrl-C (the abort signal): not a failure of the stack. */
export class InterruptedError extends Error {}

/** A small admin client of the API. */
export class Api {
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

/** A workspace the simulation created, as last polled. */
export interface Tracked {
  id: string;
  boxDir: string;
  state: WorkspaceView | null;
  pid: number | null;
  transitions: ObservedTransition[];
}

export class Simulation {
  readonly started = Date.now();
  readonly runId = randomBytes(3).toString('hex');
  readonly api: Api;
  /** The simulator's own view of the boxes: first boots, runtime pids, box folders. */
  readonly driver: LocalBoxDriver;
  /** Every workspace created so far: cleanup removes each, whatever failed after its creation. */
  readonly tracked: Tracked[] = [];
  readonly failures: string[] = [];
  readonly phases: PhaseReport[] = [];
  /** Each workspace's last poll error, said once until it changes. */
  readonly pollErrors = new Map<string, string>();
  interrupted = false;
  /** Set by the setup with `--ssh`. */
  ssh: SimulatedSshBoxes | null = null;
  /** The sshd runs detached from this process: if it dies before its cleanup, the sshd goes with it. */
  readonly abandonSsh = (): void => this.ssh?.abandon();

  constructor(
    readonly options: SimulationOptions,
    private readonly log: Log,
  ) {
    this.api = new Api(options.apiUrl.replace(/\/+$/, ''), options.adminToken);
    this.driver = new LocalBoxDriver({
      root: options.boxesDir,
      runtimeCommand: options.runtimeCommand,
      runtimeEnv: { WL_API_URL: options.apiUrl },
    });
  }

  get abort(): AbortSignal | undefined {
    return this.options.signal;
  }

  /** One line, stamped with the seconds since the start at `at` (default now). */
  say(line: string, at?: number): void {
    this.log(`${(((at ?? Date.now()) - this.started) / 1000).toFixed(1).padStart(6)}s ${line}`);
  }

  /** The workspace id padded to the longest tracked one, so the lines after it align. */
  pad(id: string): string {
    return id.padEnd(Math.max(...this.tracked.map((t) => t.id.length), id.length) + 1);
  }

  checkAbort(): void {
    if (this.abort?.aborted) throw new InterruptedError('interrupted');
  }

  /**
   * Runs one phase with its deadline (`phaseTimeoutMs` from now), says when it starts and how it
   * ended, and records it; a phase that failed adds its failure. False unless it succeeded.
   */
  async phase(name: string, work: (deadline: number) => Promise<void>): Promise<boolean> {
    const begin = Date.now();
    const { phaseTimeoutMs } = this.options;
    this.say(`== ${name}`);
    try {
      await work(begin + phaseTimeoutMs);
      this.phases.push({ name, ok: true, ms: Date.now() - begin });
      this.say(`== ${name}: done in ${((Date.now() - begin) / 1000).toFixed(1)}s`);
      return true;
    } catch (err) {
      this.phases.push({ name, ok: false, ms: Date.now() - begin });
      if (err instanceof InterruptedError) {
        this.interrupted = true;
        this.say(`== ${name}: interrupted`);
        return false;
      }
      const message =
        err instanceof TimeoutError ? `within ${phaseTimeoutMs / 1000}s, ${err.message}` : describeError(err);
      this.failures.push(`${name}: ${message}`);
      this.say(`== ${name}: FAILED: ${message}`);
      return false;
    }
  }
}
