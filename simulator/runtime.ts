/**
 * A simulated agent runtime: one process per local box (the local box driver runs it with
 * cwd = the box, WORKSPACE_ID and WORKSPACE_DIR set). It behaves like a real runtime towards the
 * API: registers (poll mode), stores the token it is given, heartbeats, registers again on 401
 * (its tokens were revoked by dead detection) with the boot credential the restart left in the
 * box, retries transient failures (network, 408, 429,
 * 5xx) with backoff, and exits cleanly on SIGTERM. Any other refusal (404: the workspace is
 * unknown or removed; 403; 400) is final: it logs why and exits 1. One log line per action on
 * stdout (the box's runtime.log).
 *
 *   WL_API_URL            the API (required), e.g. http://127.0.0.1:8080
 *   WL_SIM_HEARTBEAT_MS   heartbeat interval (default 30000)
 *   <WORKSPACE_DIR>/runtime-token   the bearer token; written back when register returns one
 *   <WORKSPACE_DIR>/boot-credential the one-time credential a register needs while the workspace
 *                                   has no live token; read afresh at each such register
 */
import { readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { BOOT_CREDENTIAL_FILE } from '../activities/box/driver.js';
import { boxPluginsDir, INCOMING_SUFFIX, REVISION_FILE } from '../activities/box/local.js';
import { MANIFEST_FILE, readManifest } from '../activities/plugins/stage.js';
import { idleHeartbeat, type HeartbeatInput, type RegisterPayload } from '../workflows/payloads.js';
import { describeError, errorText, readBody } from './http.js';

export const TOKEN_FILE = 'runtime-token';
export const DEFAULT_HEARTBEAT_MS = 30_000;
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
  const heartbeatMs = heartbeatMsFromEnv(env);
  if (workspaceId === '') problems.push('WORKSPACE_ID is not set (the box driver sets it)');
  if (workspaceDir === '') problems.push('WORKSPACE_DIR is not set (the box driver sets it)');
  if (apiUrl === '') problems.push('WL_API_URL is not set (the API URL, e.g. http://127.0.0.1:8080)');
  else if (!/^https?:\/\/\S+$/.test(apiUrl)) problems.push(`WL_API_URL is not an http(s) URL: ${apiUrl}`);
  if (heartbeatMs === null)
    problems.push(`WL_SIM_HEARTBEAT_MS must be a number of milliseconds >= 100, got ${env['WL_SIM_HEARTBEAT_MS']}`);
  return heartbeatMs === null || problems.length > 0
    ? { ok: false, problems }
    : { ok: true, settings: { workspaceId, workspaceDir, apiUrl, heartbeatMs } };
}

/** `WL_SIM_HEARTBEAT_MS` (default 30000); null when it is not a number of milliseconds >= 100. */
export function heartbeatMsFromEnv(env: NodeJS.ProcessEnv): number | null {
  const value = Number(env['WL_SIM_HEARTBEAT_MS'] ?? DEFAULT_HEARTBEAT_MS);
  return Number.isFinite(value) && value >= 100 ? value : null;
}

/** The plugins delivered to the box: `configs/plugins/<name>/plugin.yaml` (the local box driver's layout). */
export async function seenPlugins(workspaceDir: string): Promise<SeenPlugin[]> {
  const root = boxPluginsDir(workspaceDir);
  const entries = await readdir(root, { withFileTypes: true }).catch(() => []);
  const plugins: SeenPlugin[] = [];
  for (const entry of entries) {
    // `<name>.incoming` is a delivery in progress (the driver swaps it in whole).
    if (!entry.isDirectory() || entry.name.endsWith(INCOMING_SUFFIX)) continue;
    // An unreadable manifest is still a plugin directory; it is reported without a version.
    const manifest = await readManifest(join(root, entry.name, MANIFEST_FILE));
    const revision = await readFile(join(root, entry.name, REVISION_FILE), 'utf8').catch(() => null);
    plugins.push({ name: entry.name, version: manifest?.version ?? null, revision: revision?.trim() ?? null });
  }
  return plugins.sort((a, b) => a.name.localeCompare(b.name));
}

type Outcome =
  | { kind: 'ok'; status: number; body: unknown }
  /** 401: the token was revoked (dead detection) or is unknown: register again. */
  | { kind: 'unauthorized'; status: number; detail: string }
  /** Any other 4xx but 408/429 (404: workspace unknown or removed; 403; 400): retrying cannot help. */
  | { kind: 'refused'; status: number; detail: string }
  /** Network error, 408, 429, 5xx: retry with backoff, or after the answer's Retry-After. */
  | { kind: 'transient'; detail: string; retryAfterMs?: number }
  /** The stop signal aborted the request. */
  | { kind: 'stopped' };

/** Why the runtime gave up: the API refused it for good. */
export class RefusedError extends Error {}

export class SimulatedRuntime {
  private token: string | null = null;
  /** Without a token, or since a call was refused with 401: the next register sends the boot credential. */
  private withBootCredential = false;
  private readonly started = Date.now();
  private plugins: SeenPlugin[] = [];
  private backoffMs = BACKOFF_START_MS;
  /** The last refusal's Retry-After, which the next wait honours. */
  private retryAfterMs: number | undefined;

  constructor(
    private readonly settings: RuntimeSettings,
    private readonly stop: AbortSignal,
    private readonly log: (line: string) => void,
  ) {}

  /**
   * Runs until the stop signal: register, then heartbeat; register again whenever a call says 401.
   * Rejects with a RefusedError when the API refuses it for good (404, 403, other 4xx).
   */
  async run(): Promise<void> {
    this.token = await this.readToken();
    this.withBootCredential = this.token === null;
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
      else if (beat === 'retry') await this.backoff();
    }
  }

  private async register(): Promise<boolean> {
    const sent = this.withBootCredential;
    const headers: Record<string, string> = {};
    if (sent) {
      // Read afresh each time: a retried restart may have replaced it.
      const credential = await this.readBootCredential();
      if (credential !== null) headers['x-boot-credential'] = credential;
    }
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
    } satisfies RegisterPayload;
    const outcome = await this.call('/registry/register', payload, headers);
    if (outcome.kind === 'stopped') return false;
    if (outcome.kind === 'refused') throw refused('register', outcome);
    if (outcome.kind === 'unauthorized' && !sent) {
      // The token was revoked: the workspace is back in bootstrap; again at once, with the credential.
      this.log(`register refused (${outcome.status} ${outcome.detail}): registering with the boot credential`);
      this.withBootCredential = true;
      return this.register();
    }
    if (outcome.kind !== 'ok') {
      this.log(`register failed: ${describeOutcome(outcome)}`);
      return false;
    }
    const token = tokenOf(outcome.body);
    if (token !== null) {
      this.token = token;
      await this.writeToken(token);
    }
    this.withBootCredential = false;
    this.backoffMs = BACKOFF_START_MS;
    this.log(
      `registered (poll mode)${token !== null ? ', new token stored' : ''}, ${plugins.length} plugin(s) [${describe(plugins)}]`,
    );
    return true;
  }

  private async heartbeat(): Promise<'ok' | 'reregister' | 'retry' | 'stopped'> {
    const plugins = await seenPlugins(this.settings.workspaceDir);
    if (describe(plugins) !== describe(this.plugins)) {
      this.log(`plugins changed: [${describe(this.plugins)}] → [${describe(plugins)}]`);
      this.plugins = plugins;
    }
    const uptime = Math.floor((Date.now() - this.started) / 1000);
    const outcome = await this.call('/registry/heartbeat', idleHeartbeat(this.settings.workspaceId, uptime));
    switch (outcome.kind) {
      case 'ok':
        this.backoffMs = BACKOFF_START_MS;
        this.log(`heartbeat ok (uptime ${uptime}s, ${plugins.length} plugin(s))`);
        return 'ok';
      case 'unauthorized':
        this.log(`heartbeat refused (${outcome.status} ${outcome.detail}): registering again`);
        this.withBootCredential = true;
        return 'reregister';
      case 'refused':
        throw refused('heartbeat', outcome);
      case 'stopped':
        return 'stopped';
      case 'transient':
        this.log(`heartbeat failed: ${describeOutcome(outcome)}`);
        return 'retry';
    }
  }

  private async call(
    path: string,
    body: RegisterPayload | HeartbeatInput,
    extraHeaders: Record<string, string> = {},
  ): Promise<Outcome> {
    const headers: Record<string, string> = { 'content-type': 'application/json', ...extraHeaders };
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
      if (this.stop.aborted) return { kind: 'stopped' };
      return { kind: 'transient', detail: networkError(err) };
    }
    const parsed = await readBody(response);
    if (this.stop.aborted) return { kind: 'stopped' };
    if (response.ok) return { kind: 'ok', status: response.status, body: parsed };
    const detail = errorText(parsed);
    if (response.status === 401) return { kind: 'unauthorized', status: 401, detail };
    if (response.status >= 500 || response.status === 429 || response.status === 408) {
      const retryAfterMs = retryAfterHeaderMs(response.headers.get('retry-after'));
      this.retryAfterMs = retryAfterMs;
      return {
        kind: 'transient',
        detail: `${response.status} ${detail}`,
        ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
      };
    }
    return { kind: 'refused', status: response.status, detail };
  }

  /**
   * Waits before a retry: the server's Retry-After when it gave one, else the exponential
   * backoff; either spread by ±50% jitter, so runtimes refused together do not return together.
   */
  private async backoff(): Promise<void> {
    const base = this.retryAfterMs ?? this.backoffMs;
    this.retryAfterMs = undefined;
    const wait = Math.round(base * (0.5 + Math.random()));
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

  /** The box's boot credential; null (and a log line saying why a register will be refused) when absent. */
  private async readBootCredential(): Promise<string | null> {
    const file = join(this.settings.workspaceDir, BOOT_CREDENTIAL_FILE);
    const text = await readFile(file, 'utf8').catch((err: unknown) => {
      this.log(
        `no boot credential to register with (${file}: ${(err as NodeJS.ErrnoException).code ?? describeError(err)}); ` +
          'the API refuses a register without it while the workspace has no live token',
      );
      return null;
    });
    const credential = text?.trim() ?? '';
    if (text !== null && credential === '') this.log(`the boot credential file ${file} is empty`);
    return credential === '' ? null : credential;
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

function networkError(err: unknown): string {
  return err instanceof Error && err.name === 'TimeoutError'
    ? `no answer within ${REQUEST_TIMEOUT_MS / 1000}s`
    : describeError(err);
}

function describeOutcome(outcome: Extract<Outcome, { kind: 'unauthorized' | 'transient' }>): string {
  return outcome.kind === 'transient' ? outcome.detail : `${outcome.status} ${outcome.detail}`;
}

function refused(what: string, outcome: Extract<Outcome, { kind: 'refused' }>): RefusedError {
  const why =
    outcome.status === 404
      ? 'the workspace is unknown or removed'
      : outcome.status === 403
        ? 'forbidden'
        : 'the API rejected the request';
  return new RefusedError(`${what} refused for good (${outcome.status} ${outcome.detail}): ${why}; exiting`);
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
  try {
    await new SimulatedRuntime(settings, stop.signal, log).run();
  } catch (err) {
    log(err instanceof RefusedError ? err.message : `failed: ${describeError(err)}`);
    process.exit(1);
  }
  log('stopped');
}

/** Retry-After in milliseconds (delay-seconds form; an HTTP date is honoured too), if given. */
export function retryAfterHeaderMs(value: string | null): number | undefined {
  const text = value?.trim() ?? '';
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  // An HTTP date names its weekday and month ("Sun, 29 Nov 2026 17:00:00 GMT").
  const date = /[A-Za-z]/.test(text) ? Date.parse(text) : NaN;
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}
