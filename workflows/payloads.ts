/**
 * The runtime's wire payloads (register and heartbeat) and how a workflow validates them.
 * Absent numeric and string fields default to zero values, as the reference's Go binding did;
 * wrong types and out-of-range values are rejected with the field named.
 *
 * Why not zod here, as in the API: the workflow sandbox evaluates every module a workflow
 * imports once per cached workflow, and zod's costs about 520 KB of heap each time (measured:
 * 64 KB for a workflow without it, 588 KB with it), 5 GB for 10,000 cached workspaces. So this
 * module imports nothing, and `api/payload-schemas.ts` states the same rules in zod for the
 * API's validation and OpenAPI document. Two checks hold them together: the zod schemas are
 * typed against the types below, and test/unit/payloads.test.ts gives both the same payloads
 * and requires the same verdicts and the same values.
 */

export const deliveryModes = ['push', 'poll'] as const;
export type DeliveryMode = (typeof deliveryModes)[number];

export const workspaceKinds = ['workspace', 'platform'] as const;
export type WorkspaceKind = (typeof workspaceKinds)[number];

export const runtimeStates = ['', 'wedged'] as const;
export type RuntimeState = (typeof runtimeStates)[number];

/** Reference cap for the monthly spend counter (cents). */
export const MAX_MONTHLY_SPEND = 1_000_000_000_000;

/**
 * Workspace ids: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, so an
 * id is also a safe folder name (a local box lives in one). The API, the payloads and the
 * database's CHECK agree on it.
 */
export const WORKSPACE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
export const WORKSPACE_ID_RULE = 'must be 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit';
/** An agent URL: http(s) with a host, at most 2,048 characters. */
export const HTTP_URL = /^https?:\/\/[^\s/]+/i;
export const HTTP_URL_RULE = 'must be an http(s) URL';

/**
 * What no identifier, plugin source, URL, reason or caller name may hold: control characters
 * (NUL and the rest of C0, DEL, C1), format characters (bidirectional overrides, zero-width
 * ones), line and paragraph separators, and lone surrogates. PostgreSQL cannot store NUL in
 * text nor a lone surrogate in UTF-8; the others make a value read as another where it is shown
 * or logged. Free text from runtimes (sample_error, current_task, an agent card's text) is
 * accepted as sent instead: it never reaches PostgreSQL as text, and is escaped wherever it is
 * shown (operator-view.ts).
 */
export const UNSAFE_CHARACTERS = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/u;
export const UNSAFE_CHARACTERS_RULE =
  'must not contain control or format characters, line separators or lone surrogates';

/**
 * Whether a JSON value nests objects and arrays deeper than `limit` levels (the value itself is
 * level 1). An agent card passes through the workflow's JSON encoding, which recurses: bounded
 * here, a deep one is a 400 instead of an exhausted stack. Stops descending past the limit.
 */
export function nestsDeeperThan(value: unknown, limit: number): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (limit < 1) return true;
  return Object.values(value).some((child) => nestsDeeperThan(child, limit - 1));
}

/** Field limits, shared with the zod schemas of the API. */
export const limits = {
  urlLength: 2048,
  cardName: 256,
  cardDescription: 4096,
  cardVersion: 64,
  cardSkills: 1000,
  /** Levels of objects and arrays in an agent card, the card itself included. */
  cardDepth: 32,
  sampleError: 8192,
  currentTask: 4096,
} as const;
export const CARD_DEPTH_RULE = `Too deep: expected objects and arrays nested at most ${limits.cardDepth} levels`;

/** Unknown fields of an agent card are kept (passed through). */
export interface AgentCard {
  name?: string;
  description?: string;
  version?: string;
  url?: string;
  skills?: unknown[];
  [key: string]: unknown;
}

export interface RegisterPayload {
  id: string;
  url?: string;
  agent_card: AgentCard;
  delivery_mode?: DeliveryMode;
  kind?: WorkspaceKind;
}

export interface RuntimeMetadata {
  capabilities?: Record<string, boolean>;
  idle_timeout_seconds?: number | null;
}

/** A heartbeat as parsed: every defaulted field present. */
export interface HeartbeatPayload {
  workspace_id: string;
  error_rate: number;
  sample_error: string;
  active_tasks: number;
  current_task: string;
  uptime_seconds: number;
  monthly_spend: number;
  runtime_state: RuntimeState;
  runtime_metadata?: RuntimeMetadata;
  agent_card?: AgentCard;
}

/** What a caller may send: defaults filled in by parsing. */
export type HeartbeatInput = Omit<
  HeartbeatPayload,
  'error_rate' | 'sample_error' | 'active_tasks' | 'current_task' | 'uptime_seconds' | 'monthly_spend' | 'runtime_state'
> &
  Partial<
    Pick<
      HeartbeatPayload,
      | 'error_rate'
      | 'sample_error'
      | 'active_tasks'
      | 'current_task'
      | 'uptime_seconds'
      | 'monthly_spend'
      | 'runtime_state'
    >
  >;

/**
 * The delivery mode a register leads to, first match wins: its own, the workspace's stored one,
 * poll for an external runtime (the service may not reach it), push.
 */
export function effectiveDeliveryMode(
  requested: DeliveryMode | undefined,
  stored: DeliveryMode | null,
  external = false,
): DeliveryMode {
  return requested ?? stored ?? (external ? 'poll' : 'push');
}

/** Where a register says the platform reaches its agent: `url`, else the agent card's; '' when neither. */
export function registerUrl(register: Pick<RegisterPayload, 'url' | 'agent_card'>): {
  url: string;
  field: 'url' | 'agent_card.url';
} {
  if (register.url) return { url: register.url, field: 'url' };
  return { url: register.agent_card.url ?? '', field: 'agent_card.url' };
}

/** The register with the URL registerUrl reads from it replaced (the API relays the normalised form). */
export function withRegisterUrl<T extends Pick<RegisterPayload, 'url' | 'agent_card'>>(register: T, url: string): T {
  if (registerUrl(register).field === 'url') return { ...register, url };
  return { ...register, agent_card: { ...register.agent_card, url } };
}

/** The heartbeat of a healthy, idle runtime: what the simulated runtimes and load generators send. */
export function idleHeartbeat(workspaceId: string, uptimeSeconds: number): HeartbeatInput {
  return {
    workspace_id: workspaceId,
    error_rate: 0,
    sample_error: '',
    active_tasks: 0,
    current_task: '',
    uptime_seconds: uptimeSeconds,
  };
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

export function parseRegister(payload: unknown): Parsed<RegisterPayload> {
  const check = new Check();
  const body = check.object(payload, '');
  if (body === undefined) return check.result<RegisterPayload>(undefined);
  const value: RegisterPayload = {
    id: check.id(body['id'], 'id'),
    agent_card: check.agentCard(body['agent_card'], 'agent_card') ?? {},
  };
  const url = check.optionalUrl(body['url'], 'url');
  if (url !== undefined) value.url = url;
  const mode = check.optionalEnum(body['delivery_mode'], 'delivery_mode', deliveryModes);
  if (mode !== undefined) value.delivery_mode = mode;
  const kind = check.optionalEnum(body['kind'], 'kind', workspaceKinds);
  if (kind !== undefined) value.kind = kind;
  return check.result(value);
}

export function parseHeartbeat(payload: unknown): Parsed<HeartbeatPayload> {
  const check = new Check();
  const body = check.object(payload, '');
  if (body === undefined) return check.result<HeartbeatPayload>(undefined);
  const value: HeartbeatPayload = {
    workspace_id: check.id(body['workspace_id'], 'workspace_id'),
    error_rate: check.number(body['error_rate'], 'error_rate', { min: 0, max: 1 }),
    sample_error: check.string(body['sample_error'], 'sample_error', limits.sampleError),
    active_tasks: check.number(body['active_tasks'], 'active_tasks', { min: 0, integer: true }),
    current_task: check.string(body['current_task'], 'current_task', limits.currentTask),
    uptime_seconds: check.number(body['uptime_seconds'], 'uptime_seconds', { min: 0, integer: true }),
    // Cumulative for the month, in cents; 0 means "no update". Clamped like the reference.
    monthly_spend: Math.min(
      check.number(body['monthly_spend'], 'monthly_spend', { min: 0, integer: true }),
      MAX_MONTHLY_SPEND,
    ),
    runtime_state: check.optionalEnum(body['runtime_state'], 'runtime_state', runtimeStates) ?? '',
  };
  const metadata = check.runtimeMetadata(body['runtime_metadata'], 'runtime_metadata');
  if (metadata !== undefined) value.runtime_metadata = metadata;
  if (body['agent_card'] !== undefined) {
    const card = check.agentCard(body['agent_card'], 'agent_card');
    if (card !== undefined) value.agent_card = card;
  }
  return check.result(value);
}

/** Collects one problem per bad field, named by its path, e.g. `error_rate: Too big: expected number to be <=1`. */
class Check {
  private readonly problems: string[] = [];

  result<T>(value: T | undefined): Parsed<T> {
    if (this.problems.length > 0 || value === undefined) return { ok: false, reason: this.problems.join('; ') };
    return { ok: true, value };
  }

  private fail(path: string, problem: string): undefined {
    this.problems.push(`${path === '' ? '(body)' : path}: ${problem}`);
    return undefined;
  }

  object(value: unknown, path: string): Record<string, unknown> | undefined {
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
    return this.fail(path, `Invalid input: expected object, received ${typeName(value)}`);
  }

  id(value: unknown, path: string): string {
    if (typeof value !== 'string') {
      this.fail(path, `Invalid input: expected string, received ${typeName(value)}`);
      return '';
    }
    if (WORKSPACE_ID.test(value)) return value;
    this.fail(path, WORKSPACE_ID_RULE);
    return '';
  }

  /** A string, '' when absent. */
  string(value: unknown, path: string, max: number): string {
    if (value === undefined) return '';
    return this.optionalString(value, path, max) ?? '';
  }

  optionalString(value: unknown, path: string, max: number): string | undefined {
    if (value === undefined) return undefined;
    if (typeof value !== 'string')
      return this.fail(path, `Invalid input: expected string, received ${typeName(value)}`);
    if (value.length > max) return this.fail(path, `Too big: expected string to have <=${max} characters`);
    return value;
  }

  /** A finite number, 0 when absent. */
  number(value: unknown, path: string, rule: { min: number; max?: number; integer?: boolean }): number {
    if (value === undefined) return 0;
    return this.optionalNumber(value, path, rule) ?? 0;
  }

  optionalNumber(
    value: unknown,
    path: string,
    rule: { min: number; max?: number; integer?: boolean },
  ): number | undefined {
    if (value === undefined) return undefined;
    if (typeof value !== 'number' || !Number.isFinite(value))
      return this.fail(path, `Invalid input: expected number, received ${typeName(value)}`);
    if (rule.integer && !Number.isSafeInteger(value))
      return this.fail(path, 'Invalid input: expected int, received number');
    if (value < rule.min) return this.fail(path, `Too small: expected number to be >=${rule.min}`);
    if (rule.max !== undefined && value > rule.max)
      return this.fail(path, `Too big: expected number to be <=${rule.max}`);
    return value;
  }

  optionalEnum<T extends string>(value: unknown, path: string, options: readonly T[]): T | undefined {
    if (value === undefined) return undefined;
    if (typeof value === 'string' && (options as readonly string[]).includes(value)) return value as T;
    return this.fail(path, `Invalid option: expected one of ${options.map((o) => JSON.stringify(o)).join('|')}`);
  }

  /** An http(s) URL or ''. */
  optionalUrl(value: unknown, path: string): string | undefined {
    const url = this.optionalString(value, path, limits.urlLength);
    if (url === undefined || url === '') return url;
    if (UNSAFE_CHARACTERS.test(url)) return this.fail(path, UNSAFE_CHARACTERS_RULE);
    if (HTTP_URL.test(url)) return url;
    return this.fail(path, HTTP_URL_RULE);
  }

  agentCard(value: unknown, path: string): AgentCard | undefined {
    const card = this.object(value, path);
    if (card === undefined) return undefined;
    if (nestsDeeperThan(card, limits.cardDepth)) return this.fail(path, CARD_DEPTH_RULE);
    const checked: AgentCard = { ...card };
    const fields = [
      ['name', limits.cardName],
      ['description', limits.cardDescription],
      ['version', limits.cardVersion],
    ] as const;
    for (const [field, max] of fields) this.optionalString(card[field], `${path}.${field}`, max);
    this.optionalUrl(card['url'], `${path}.url`);
    const skills = card['skills'];
    if (skills !== undefined) {
      if (!Array.isArray(skills))
        this.fail(`${path}.skills`, `Invalid input: expected array, received ${typeName(skills)}`);
      else if (skills.length > limits.cardSkills)
        this.fail(`${path}.skills`, `Too big: expected array to have <=${limits.cardSkills} items`);
    }
    return checked;
  }

  runtimeMetadata(value: unknown, path: string): RuntimeMetadata | undefined {
    if (value === undefined) return undefined;
    const metadata = this.object(value, path);
    if (metadata === undefined) return undefined;
    const checked: RuntimeMetadata = {};
    const capabilities = metadata['capabilities'];
    if (capabilities !== undefined) {
      const record = this.object(capabilities, `${path}.capabilities`);
      if (record !== undefined) {
        for (const [key, flag] of Object.entries(record))
          if (typeof flag !== 'boolean')
            this.fail(`${path}.capabilities.${key}`, `Invalid input: expected boolean, received ${typeName(flag)}`);
        checked.capabilities = { ...record } as Record<string, boolean>;
      }
    }
    const idle = metadata['idle_timeout_seconds'];
    if (idle === null) checked.idle_timeout_seconds = null;
    else {
      const seconds = this.optionalNumber(idle, `${path}.idle_timeout_seconds`, { min: 0, integer: true });
      if (seconds !== undefined) checked.idle_timeout_seconds = seconds;
    }
    return checked;
  }
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number' && Number.isNaN(value)) return 'NaN';
  return typeof value;
}
