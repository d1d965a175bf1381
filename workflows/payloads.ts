/**
 * The runtime's wire payloads (register and heartbeat), validated where they enter a workflow.
 * The same schemas serve the HTTP API, so a payload the API accepts is one the workflow accepts.
 * Absent numeric and string fields default to zero values, as the reference's Go binding did;
 * wrong types and out-of-range values are rejected with the field named.
 */
import { z } from 'zod';

export const deliveryModes = ['push', 'poll'] as const;
export type DeliveryMode = (typeof deliveryModes)[number];

export const workspaceKinds = ['workspace', 'platform'] as const;
export type WorkspaceKind = (typeof workspaceKinds)[number];

/** Reference cap for the monthly spend counter (cents). */
export const MAX_MONTHLY_SPEND = 1_000_000_000_000;

const httpUrl = z
  .string()
  .max(2048)
  .refine((value) => /^https?:\/\/[^\s/]+/i.test(value), { message: 'must be an http(s) URL' });

export const agentCardSchema = z
  .object({
    name: z.string().max(256).optional(),
    description: z.string().max(4096).optional(),
    version: z.string().max(64).optional(),
    url: z.union([httpUrl, z.literal('')]).optional(),
    skills: z.array(z.unknown()).max(1000).optional(),
  })
  .loose();
export type AgentCard = z.infer<typeof agentCardSchema>;

/**
 * Workspace ids: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, so an
 * id is also a safe folder name (a local box lives in one). The API, the payloads and the
 * database's CHECK agree on it.
 */
export const WORKSPACE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
export const workspaceIdSchema = z
  .string()
  .regex(WORKSPACE_ID, 'must be 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit');

export const registerPayloadSchema = z.object({
  id: workspaceIdSchema,
  url: z.union([httpUrl, z.literal('')]).optional(),
  agent_card: agentCardSchema,
  delivery_mode: z.enum(deliveryModes).optional(),
  kind: z.enum(workspaceKinds).optional(),
});
export type RegisterPayload = z.infer<typeof registerPayloadSchema>;

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

export const runtimeStates = ['', 'wedged'] as const;

export const heartbeatPayloadSchema = z.object({
  workspace_id: workspaceIdSchema,
  error_rate: z.number().min(0).max(1).default(0),
  sample_error: z.string().max(8192).default(''),
  active_tasks: z.number().int().min(0).default(0),
  current_task: z.string().max(4096).default(''),
  uptime_seconds: z.number().int().min(0).default(0),
  // Cumulative for the month, in cents; 0 means "no update". Clamped like the reference.
  monthly_spend: z
    .number()
    .int()
    .min(0)
    .default(0)
    .transform((v) => Math.min(v, MAX_MONTHLY_SPEND)),
  runtime_state: z.enum(runtimeStates).default(''),
  runtime_metadata: z
    .object({
      capabilities: z.record(z.string(), z.boolean()).optional(),
      idle_timeout_seconds: z.number().int().min(0).nullable().optional(),
    })
    .optional(),
  agent_card: agentCardSchema.optional(),
});
export type HeartbeatPayload = z.infer<typeof heartbeatPayloadSchema>;
/** What a caller may send: defaults filled in by parsing. */
export type HeartbeatInput = z.input<typeof heartbeatPayloadSchema>;

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

/** One readable line naming each bad field, e.g. `error_rate: Too big: expected number to be <=1`. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => `${issue.path.length > 0 ? issue.path.join('.') : '(body)'}: ${issue.message}`)
    .join('; ');
}

export function parseRegister(payload: unknown): Parsed<RegisterPayload> {
  const result = registerPayloadSchema.safeParse(payload);
  return result.success ? { ok: true, value: result.data } : { ok: false, reason: describeIssues(result.error) };
}

export function parseHeartbeat(payload: unknown): Parsed<HeartbeatPayload> {
  const result = heartbeatPayloadSchema.safeParse(payload);
  return result.success ? { ok: true, value: result.data } : { ok: false, reason: describeIssues(result.error) };
}
