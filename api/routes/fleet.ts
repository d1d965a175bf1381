/**
 * The fleet, for operators: the fleet liveness controller's state (disruption, pause, last
 * sweep), and pausing and resuming its automatic remediation with a reason (docs/fleet-liveness.md).
 * Pause and resume are Updates on the controller's workflow, answered with what they did. Every
 * route here takes the admin token.
 */
import { WorkflowNotFoundError, WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import {
  FLEET_LIVENESS_WORKFLOW_ID,
  fleetLivenessStateQuery,
  pauseRemediationUpdate,
  resumeRemediationUpdate,
  type FleetLivenessState,
} from '../../workflows/definitions.js';
import type { ApiContext } from '../context.js';
import { HttpError } from '../errors.js';
import { safeText } from '../payload-schemas.js';
import { errors } from '../schemas.js';
import { requireAdmin } from '../tokens.js';

const pauseSchema = z.object({ reason: z.string(), by: z.string(), since: z.string() });
const disruptionSchema = z.object({
  since: z.string(),
  silent: z.number(),
  watched: z.number(),
  share: z.number(),
  apiSilentForMs: z.number().nullable(),
});
const answerSchema = z.object({
  outcome: z.enum(['paused', 'already-paused', 'resumed', 'not-paused']),
  paused: pauseSchema.nullable(),
});
const fleetSchema = z.object({
  disruption: disruptionSchema.nullable(),
  lastDisruption: disruptionSchema.extend({ until: z.string() }).nullable(),
  paused: pauseSchema.nullable(),
  notBefore: z.string().nullable(),
  lastSweep: z
    .object({
      at: z.string(),
      watched: z.number(),
      expired: z.number(),
      signalled: z.number(),
      gone: z.number(),
      failed: z.number(),
      held: z.number(),
    })
    .nullable(),
  lastFailure: z.object({ at: z.string(), error: z.string() }).nullable(),
  sweeps: z.number(),
  totals: z.object({ expiredFound: z.number(), signalled: z.number() }),
  settings: z.object({
    sweepEveryMs: z.number(),
    batch: z.number(),
    disruptionShare: z.number(),
    disruptionMinLeases: z.number(),
    apiServingGraceMs: z.number(),
    remediationPerMinute: z.number(),
  }),
});

/** Operator text: what safeText allows, not blank. */
const operatorText = (max: number) =>
  safeText(z.string().min(1).max(max)).refine((value) => value.trim() !== '', { message: 'must not be blank' });
const who = operatorText(200);
const NO_CONTROLLER =
  'the fleet liveness controller is not running: start a worker, which starts it (docs/fleet-liveness.md)';

/** The controller's last run has closed (an operator terminated it, or it failed). */
class ControllerClosed extends Error {
  constructor(status: string) {
    super(`the fleet liveness controller's last run is ${status.toLowerCase()}`);
  }
}

/**
 * The running controller's state. A closed run is refused as not running: a query would be
 * answered by a worker replaying it (its state when it closed, shown as current) or, with no
 * worker on its task queue, by nobody until the call's deadline.
 */
export async function runningControllerState(client: Client): Promise<FleetLivenessState> {
  const controller = client.workflow.getHandle(FLEET_LIVENESS_WORKFLOW_ID);
  const { status } = await controller.describe();
  if (status.name !== 'RUNNING') throw new ControllerClosed(status.name);
  return controller.query(fleetLivenessStateQuery);
}

export const fleetRoutes: FastifyPluginCallbackZod<{ ctx: ApiContext }> = (app, { ctx }, done) => {
  const { client, settings } = ctx;
  const controller = () => client.workflow.getHandle(FLEET_LIVENESS_WORKFLOW_ID);
  /** A call to the controller; its absence is named, and a refused update is the operator's 400. */
  const toController = <T>(work: () => Promise<T>): Promise<T> =>
    ctx.admitted(() =>
      ctx.temporal(() =>
        work().catch((err: unknown) => {
          if (err instanceof WorkflowNotFoundError) throw new HttpError(503, NO_CONTROLLER, { retryAfter: 15 });
          if (err instanceof ControllerClosed)
            throw new HttpError(503, `${NO_CONTROLLER}; ${err.message}`, { retryAfter: 15 });
          if (err instanceof WorkflowUpdateFailedError)
            throw new HttpError(400, `the controller refused: ${err.cause?.message ?? err.message}`);
          throw err;
        }),
      ),
    );

  app.addHook('onRequest', requireAdmin(settings.adminToken));

  app.get(
    '/fleet',
    {
      schema: {
        summary: "The fleet liveness controller's state: disruption, remediation pause, last sweep",
        security: [{ bearer: [] }],
        response: { 200: fleetSchema, ...errors(401, 429, 502, 503) },
      },
    },
    async () => toController(() => runningControllerState(client)),
  );

  app.post(
    '/fleet/pause',
    {
      schema: {
        summary: 'Pause automatic remediation for the fleet: nobody is signalled leaseExpired until resumed',
        security: [{ bearer: [] }],
        body: z.strictObject({ reason: operatorText(500), by: who }),
        response: { 200: answerSchema, ...errors(400, 401, 429, 502, 503) },
      },
    },
    async (request) => toController(() => controller().executeUpdate(pauseRemediationUpdate, { args: [request.body] })),
  );

  app.post(
    '/fleet/resume',
    {
      schema: {
        summary: 'Resume automatic remediation: expired leases are signalled again, at the remediation budget',
        security: [{ bearer: [] }],
        body: z.strictObject({ by: who }),
        response: { 200: answerSchema, ...errors(400, 401, 429, 502, 503) },
      },
    },
    async (request) =>
      toController(() => controller().executeUpdate(resumeRemediationUpdate, { args: [request.body] })),
  );

  done();
};
