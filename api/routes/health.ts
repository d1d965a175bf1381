/**
 * Operations: liveness, readiness (which dependency is down), Prometheus metrics and the
 * OpenAPI document. No auth, never refused by admission control.
 */
import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { ApiContext } from '../context.js';
import { DEPENDENCY_RETRY_AFTER_SECONDS } from '../errors.js';
import type { Metrics } from '../metrics.js';

/** Routes admission control never refuses: probes must see the truth under load. */
export const operationsPaths: ReadonlySet<string> = new Set(['/healthz', '/readyz', '/metrics', '/openapi.json']);

export const healthRoutes: FastifyPluginCallbackZod<{ ctx: ApiContext; metrics: Metrics }> = (
  app,
  { ctx, metrics },
  done,
) => {
  const { client, store } = ctx;

  app.get(
    '/healthz',
    { schema: { summary: 'The process is up', response: { 200: z.object({ status: z.literal('ok') }) } } },
    () => ({
      status: 'ok' as const,
    }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        summary: 'Temporal and PostgreSQL are reachable',
        response: {
          200: z.object({ temporal: z.string(), database: z.string() }),
          503: z.object({ temporal: z.string(), database: z.string() }),
        },
      },
    },
    async (_request, reply) => {
      const check = async (work: () => Promise<unknown>): Promise<string> =>
        work().then(
          () => 'ok',
          (err: unknown) => `unavailable: ${(err as Error).message}`,
        );
      const [temporalStatus, database] = await Promise.all([
        check(() => client.withDeadline(Date.now() + 2_000, () => client.workflowService.getSystemInfo({}))),
        check(() => store.ping()),
      ]);
      const ready = temporalStatus === 'ok' && database === 'ok';
      if (!ready) void reply.header('Retry-After', String(DEPENDENCY_RETRY_AFTER_SECONDS));
      return reply.status(ready ? 200 : 503).send({ temporal: temporalStatus, database });
    },
  );

  app.get('/metrics', { schema: { summary: 'Prometheus metrics', hide: true } }, async (_request, reply) =>
    reply.header('Content-Type', metrics.contentType).send(await metrics.render()),
  );

  done();
};
