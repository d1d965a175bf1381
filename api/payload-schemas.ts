/**
 * The runtime's payloads as zod schemas: the API validates request bodies with them and
 * documents them in its OpenAPI document. The rules are the workflow's (workflows/payloads.ts,
 * which validates without zod to stay small in the workflow sandbox): each schema is typed
 * against the workflow's types, and test/unit/payloads.test.ts requires the same verdicts and
 * values from both on the same payloads.
 */
import type { FastifyRouteSchemaDef, FastifyValidationResult } from 'fastify/types/schema.js';
import { validatorCompiler } from 'fastify-type-provider-zod';
import { z } from 'zod';
import {
  CARD_DEPTH_RULE,
  HTTP_URL,
  HTTP_URL_RULE,
  MAX_MONTHLY_SPEND,
  UNSAFE_CHARACTERS,
  UNSAFE_CHARACTERS_RULE,
  WORKSPACE_ID,
  WORKSPACE_ID_RULE,
  deliveryModes,
  limits,
  nestsDeeperThan,
  parseHeartbeat,
  runtimeStates,
  workspaceKinds,
  type HeartbeatInput,
  type HeartbeatPayload,
  type RegisterPayload,
} from '../workflows/payloads.js';

/** Text that names or locates something: no control or format characters (workflows/payloads.ts). */
export function safeText(schema: z.ZodString): z.ZodString {
  return schema.refine((value) => !UNSAFE_CHARACTERS.test(value), { message: UNSAFE_CHARACTERS_RULE });
}

const httpUrl = safeText(z.string().max(limits.urlLength)).refine((value) => HTTP_URL.test(value), {
  message: HTTP_URL_RULE,
});

export const agentCardSchema = z
  .object({
    name: z.string().max(limits.cardName).optional(),
    description: z.string().max(limits.cardDescription).optional(),
    version: z.string().max(limits.cardVersion).optional(),
    url: z.union([httpUrl, z.literal('')]).optional(),
    skills: z.array(z.unknown()).max(limits.cardSkills).optional(),
  })
  .loose()
  .refine((card) => !nestsDeeperThan(card, limits.cardDepth), { message: CARD_DEPTH_RULE });

export const workspaceIdSchema = z.string().regex(WORKSPACE_ID, WORKSPACE_ID_RULE);

export const registerPayloadSchema: z.ZodType<RegisterPayload> = z.object({
  id: workspaceIdSchema,
  url: z.union([httpUrl, z.literal('')]).optional(),
  agent_card: agentCardSchema,
  delivery_mode: z.enum(deliveryModes).optional(),
  kind: z.enum(workspaceKinds).optional(),
});

export const heartbeatPayloadSchema: z.ZodType<HeartbeatPayload, HeartbeatInput> = z.object({
  workspace_id: workspaceIdSchema,
  error_rate: z.number().min(0).max(1).default(0),
  sample_error: z.string().max(limits.sampleError).default(''),
  active_tasks: z.number().int().min(0).default(0),
  current_task: z.string().max(limits.currentTask).default(''),
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

/**
 * The heartbeat route's body validator. The workflow's zod-free parse decides: it gives the same
 * verdicts and values as heartbeatPayloadSchema (test/unit/payloads.test.ts) at a fraction of
 * zod's cost on the API's busiest route. A body it refuses is validated again by the schema,
 * so the 400 names its issues in the words every other route uses.
 */
export function heartbeatValidatorCompiler<S>(route: FastifyRouteSchemaDef<S>): FastifyValidationResult {
  // Fastify compiles each part of the request with that part's schema: the body's is a zod schema.
  const withIssues = validatorCompiler(route as FastifyRouteSchemaDef<unknown> as FastifyRouteSchemaDef<z.ZodType>);
  return (data) => {
    const parsed = parseHeartbeat(data);
    return parsed.ok ? { value: parsed.value } : withIssues(data);
  };
}
