/**
 * A simulated agent runtime: one process per local box (the local box driver runs it with
 * cwd = the box, WORKSPACE_ID and WORKSPACE_DIR set). It behaves like a real runtime towards the
 * API: registers (poll mode), stores the token it is given, heartbeats, registers again on 401
 * (its tokens were revoked by dead detection), retries transient failures with backoff, and
 * exits cleanly on SIGTERM. One log line per action on stdout (the box's runtime.log).
 *
 *   WL_API_URL            the API (required), e.g. http://127.0.0.1:8080
 *   WL_SIM_HEARTBEAT_MS   heartbeat interval (default 30000)
 *   <WORKSPACE_DIR>/runtime-token   the bearer token; written back when register returns one
 */
import { readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';

export const TOKEN_FILE = 'runtime-token';
const REQUEST_TIMEOUT_MS = 10_000;
const BACKOFF_START_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;

export interface RuntimeSettings {
  workspaceId: string;
  workspaceDir: string;
  apiUrl: string;
  heartbeatMs: number;
}

export interface SeenPlugin {
  name: string;
  version: string | null;
  revision: string | null;
}

/** Settings from the environment, or the names of what is missing or wrong. */
export function runtimeSettingsFromEnv(
  env: NodeJS.ProcessEnv,
): { ok: true; settings: RuntimeSettings } | { ok: false; problems: string[] } {
  const problems: string[] = [];
  const workspaceId = env['WORKSPACE_ID'] ?? '';
  const workspaceDir = env['WORKSPACE_DIR'] ?? '';
  const apiUrl = (env['WL_API_URL'] ?? '').replace(/\/+$/, '');
  const heartbeatMs = Number(env['WL_SIM_HEARTBEAT_MS'] ?? 30_000);
  if (workspaceId === '') problems.push('WORKSPACE_ID is not set (the box driver sets it)');
  if (workspaceDir === '') problems.push('WORKSPACE_DIR is not set (the box driver sets it)');
  if (apiUrl === '') problems.push('WL_API_URL is not set (the API URL, e.g. http://127.0.0.1:8080)');
  else if (!/^https?:\/\/\S+$/.test(apiUrl)) problems.push(`WL_API_URL is not an http(s) URL: ${apiUrl}`);
  if (!Number.isFinite(heartbeatMs) || heartbeatMs < 100)
    problems.push(`WL_SIM_HEARTBEAT_MS must be a number of milliseconds >= 100, got ${env['WL_SIM_HEARTBEAT_MS']}`);
  return problems.length > 0
    ? { ok: false, problems }
    : { ok: true, settings: { workspaceId, workspaceDir, apiUrl, heartbeatMs } };
}

/** The plugins delivered to the box: `configs/plugins/<name>/plugin.yaml`. */
export async function seenPlugins(workspaceDir: string): Promise<SeenPlugin[]> {
  const root = join(workspaceDir, 'configs', 'plugins');
  const entries = await readdir(root, { withFileTypes: true }).catch(() => []);
  const plugins: SeenPlugin[] = [];
  for (const entry of entries) {
    // `<name>.incoming` is a delivery in progress (the driver swaps it in whole).
    if (!entry.isDirectory() || entry.name.endsWith('.incoming')) continue;
    const manifest = await readFile(join(root, entry.name, 'plugin.yaml'), 'utf8').catch(() => null);
    const revision = await readFile(join(root, entry.name, '.revision'), 'utf8').catch(() => null);
    let version: string | null = null;
    if (manifest !== null) {
      try {
        const parsed: unknown = parseYaml(manifest);
        if (typeof parsed === 'object' && parsed !== null && 'version' in parsed) version = String(parsed.version);
      } catch {
        // An unreadable manifest is still a plugin directory; report it without a version.
      }
    }
    plugins.push({ name: entry.name, version, revision: revision?.trim() ?? null });
  }
  return plugins.sort((a, b) => a.name.localeCompare(b.name));
}

type Outcome =
  | { kind: 'ok'; status: number; body: unknown }
  | { kind: 'unauthorized'; status: number; detail: string }
  | { kind: 'rejected'; status: number; detail: string }
  | { kind: 'transient'; detail: string };

export class SimulatedRuntime {
  private token: string | null = null;
  private readonly started = Date.now();
  private plugins: SeenPlugin[] = [];
  private backoffMs = BACKOFF_START_MS;

  constructor(
    private readonly settings: RuntimeSettings,
    private readonly stop: AbortSignal,
    private readonly log: (line: string) => void,
  ) {}

  /** Runs until the stop signal: register, then heartbeat; register again whenever a call says 401. */
  async run(): Promise<void> {
    this.token = await this.readToken();
    this.plugins = await seenPlugins(this.settings.workspaceDir);
    this.log(
      `start: api ${this.settings.apiUrl}, heartbeat every ${this.settings.heartbeatMs} ms, ` +
        `token ${this.token === null ? 'none (bootstrap)' : 'from file'}, plugins [${describe(this.plugins)}]`,
    );
    let registered = false;
    while (!this.stop.aborted) {
      if (!registered) {
        registered = await this.register();
        if (!registered) await this.backoff();
        continue;
      }
      const beat = await this.heartbeat();
      if (beat === 'ok') await this.pause(this.settings.heartbeatMs);
      else if (beat === 'reregister') registered = false;
      else await this.backoff();
    }
  }

  private async register(): Promise<boolean> {
    const plugins = await seenPlugins(this.settings.workspaceDir);
    this.plugins = plugins;
    const payload = {
      id: this.settings.workspaceId,
      delivery_mode: 'poll',
      agent_card: {
        name: `simulated runtime ${this.settings.workspaceId}`,
        description: 'simulator/runtime.ts: registers, heartbeats, does no work',
        version: '0.1.0',
        skills: plugins.map((p) => ({ id: p.name, name: p.name, version: p.version, revision: p.revision })),
      },
    };
    const outcome = await this.call('/registry/register', payload);
    if (outcome.kind !== 'ok') {
      this.log(`register failed: ${describeOutcome(outcome)}`);
      return false;
    }
    const token = tokenOf(outcome.body);
    if (token !== null) {
      this.token = token;
      await this.writeToken(token);
    }
    this.backoffMs = BACKOFF_START_MS;
    this.log(
      `registered (poll mode)${token !== null ? ', new token stored' : ''}, ${plugins.length} plugin(s) [${describe(plugins)}]`,
    );
    return true;
  }

  private async heartbeat(): Promise<'ok' | 'reregister' | 'retry'> {
    const plugins = await seenPlugins(this.settings.workspaceDir);
    if (describe(plugins) !== describe(this.plugins)) {
      this.log(`plugins changed: [${describe(this.plugins)}] → [${describe(plugins)}]`);
      this.plugins = plugins;
    }
    const uptime = Math.floor((Date.now() - this.started) / 1000);
    const outcome = await this.call('/registry/heartbeat', {
      workspace_id: this.settings.workspaceId,
      error_rate: 0,
      sample_error: '',
      active_tasks: 0,
      current_task: '',
      uptime_seconds: uptime,
    });
    switch (outcome.kind) {
      case 'ok':
        this.backoffMs = BACKOFF_START_MS;
        this.log(`heartbeat ok (uptime ${uptime}s, ${plugins.length} plugin(s))`);
        return 'ok';
      case 'unauthorized':
        this.log(`heartbeat refused (${outcome.status} ${outcome.detail}): registering again`);
        return 'reregister';
      default:
        this.log(`heartbeat failed: ${describeOutcome(outcome)}`);
        return 'retry';
    }
  }

  private async call(path: string, body: unknown): Promise<Outcome> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.token !== null) headers['authorization'] = `Bearer ${this.token}`;
    let response: Response;
    try {
      response = await fetch(`${this.settings.apiUrl}${path}`, {
        method: 'POST',
        headers,
        body: JSON.stringify(body),
        signal: AbortSignal.any([this.stop, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]),
      });
    } catch (err) {
      return { kind: 'transient', detail: networkError(err) };
    }
    const text = await response.text().catch(() => '');
    let parsed: unknown = null;
    try {
      parsed = text === '' ? null : JSON.parse(text);
    } catch {
      parsed = text;
    }
    if (response.ok) return { kind: 'ok', status: response.status, body: parsed };
    const detail = errorOf(parsed) ?? text.slice(0, 200);
    if (response.status === 401) return { kind: 'unauthorized', status: 401, detail };
    if (response.status >= 500 || response.status === 429 || response.status === 408)
      return { kind: 'transient', detail: `${response.status} ${detail}` };
    return { kind: 'rejected', status: response.status, detail };
  }

  private async backoff(): Promise<void> {
    const wait = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
    if (!this.stop.aborted) this.log(`retrying in ${(wait / 1000).toFixed(1)}s`);
    await this.pause(wait);
  }

  private async pause(ms: number): Promise<void> {
    await sleep(ms, undefined, { signal: this.stop }).catch(() => undefined);
  }

  private async readToken(): Promise<string | null> {
    const text = await readFile(join(this.settings.workspaceDir, TOKEN_FILE), 'utf8').catch(() => null);
    const token = text?.trim() ?? '';
    return token === '' ? null : token;
  }

  private async writeToken(token: string): Promise<void> {
    const file = join(this.settings.workspaceDir, TOKEN_FILE);
    try {
      await writeFile(`${file}.tmp`, `${token}\n`, { mode: 0o600 });
      await rename(`${file}.tmp`, file);
    } catch (err) {
      this.log(`could not store the token in ${file}: ${(err as Error).message}`);
    }
  }
}

function tokenOf(body: unknown): string | null {
  if (typeof body !== 'object' || body === null || !('auth_token' in body)) return null;
  return typeof body.auth_token === 'string' && body.auth_token !== '' ? body.auth_token : null;
}

function errorOf(body: unknown): string | null {
  if (typeof body !== 'object' || body === null || !('error' in body)) return null;
  return typeof body.error === 'string' ? body.error : null;
}

function networkError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause;
  if (cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code;
    return code !== undefined ? `${code} (${cause.message})` : cause.message;
  }
  return err.name === 'TimeoutError' ? `no answer within ${REQUEST_TIMEOUT_MS / 1000}s` : err.message;
}

function describeOutcome(outcome: Exclude<Outcome, { kind: 'ok' }>): string {
  return outcome.kind === 'transient' ? outcome.detail : `${outcome.status} ${outcome.detail}`;
}

function describe(plugins: SeenPlugin[]): string {
  return plugins.map((p) => (p.version === null ? p.name : `${p.name}@${p.version}`)).join(', ');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const parsed = runtimeSettingsFromEnv(process.env);
  if (!parsed.ok) {
    for (const problem of parsed.problems) console.error(`simulated runtime: ${problem}`);
    process.exit(2);
  }
  const { settings } = parsed;
  const log = (line: string): void =>
    console.log(`${new Date().toISOString()} runtime[${process.pid}] ${settings.workspaceId}: ${line}`);
  const stop = new AbortController();
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      log(`${signal}: stopping`);
      stop.abort();
    });
  }
  await new SimulatedRuntime(settings, stop.signal, log).run();
  log('stopped');
}
