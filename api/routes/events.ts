/**
 * `GET /events`: the workspaces' status changes as Server-Sent Events, from the event outbox
 * (db/tables/events.ts), with the admin token. docs/events.md describes the stream for its consumers.
 *
 * - Each event's `id` is its sequence number: gap-free and in commit order, so a client that
 *   reconnects with `Last-Event-ID` (browsers' EventSource does) gets exactly what follows, from
 *   this API process or another, before or after a restart. `?after=N` starts after N;
 *   neither: only what happens from now on. `?workspace=<id>`: that workspace's only.
 * - A resume from before the oldest event kept (WL_EVENTS_RETENTION_HOURS) first gets one
 *   `gap` event saying where the kept events begin.
 * - Bounded: at most WL_EVENTS_MAX_STREAMS streams per process (one more is 503); each reads a
 *   page at a time and writes the next only once the client took the last, and a client that
 *   takes none for STREAM_STALL_MS is cut off (it reconnects and resumes): nothing is buffered
 *   for a slow client beyond one page.
 * - One poll of the outbox's last sequence number per process wakes every stream; an idle
 *   stream gets a comment line every KEEPALIVE_MS, so proxies keep it open.
 */
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import type { ServerResponse } from 'node:http';
import { z } from 'zod';
import type { EventOutbox, StatusEvent } from '../../db/tables/events.js';
import type { ApiContext } from '../context.js';
import { DEPENDENCY_RETRY_AFTER_SECONDS, HttpError } from '../errors.js';
import { workspaceIdSchema } from '../payload-schemas.js';
import { errors } from '../schemas.js';
import { requireAdmin } from '../tokens.js';

export const EVENTS_PATH = '/events';
/** How often a process looks for new events. */
const POLL_MS = 500;
/** Events read and written at a time. */
const PAGE = 200;
const KEEPALIVE_MS = 15_000;
/** A client that takes nothing of what was written for this long is cut off. */
export const STREAM_STALL_MS = 10_000;
/** How often events past their retention are deleted. */
const RETENTION_SWEEP_MS = 60 * 60_000;

/** Why a stream ended on the server's side. */
export type StreamCut = 'slow' | 'closing' | 'error';

/**
 * The process's one poll of the outbox: wakes the streams waiting for events when the last
 * sequence number moves. Polls only while a stream waits.
 */
class EventFeed {
  private last = 0;
  private readonly waiting = new Set<{ seq: number; wake: (news: boolean) => void }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly outbox: EventOutbox,
    private readonly onError: (err: unknown) => void,
  ) {}

  /** Resolves true once events after `seq` were committed, false after `timeoutMs` (or when woken to close). */
  waitPast(seq: number, timeoutMs: number): Promise<boolean> {
    if (this.last > seq) return Promise.resolve(true);
    return new Promise((resolve) => {
      const wake = (news: boolean): void => {
        clearTimeout(timeout);
        this.waiting.delete(entry);
        resolve(news);
      };
      const entry = { seq, wake };
      const timeout = setTimeout(() => wake(false), timeoutMs);
      this.waiting.add(entry);
      this.timer ??= setInterval(() => void this.poll(), POLL_MS);
    });
  }

  /** Wakes every waiting stream (the process is closing). */
  wakeAll(): void {
    for (const { wake } of [...this.waiting]) wake(false);
    this.stopIfIdle();
  }

  private async poll(): Promise<void> {
    try {
      const last = await this.outbox.lastSequence();
      if (last > this.last) {
        this.last = last;
        for (const { seq, wake } of [...this.waiting]) if (last > seq) wake(true);
      }
    } catch (err) {
      this.onError(err);
    }
    this.stopIfIdle();
  }

  private stopIfIdle(): void {
    if (this.waiting.size > 0 || this.timer === undefined) return;
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** Writes `chunk`; resolves true once the client has taken it, false if it did not within the stall limit or left. */
function written(raw: ServerResponse, chunk: string): Promise<boolean> {
  if (raw.destroyed) return Promise.resolve(false);
  if (raw.write(chunk)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      raw.off('drain', onDrain);
      raw.off('close', onClose);
      resolve(ok);
    };
    const onDrain = (): void => done(true);
    const onClose = (): void => done(false);
    const timer = setTimeout(() => done(false), STREAM_STALL_MS);
    raw.on('drain', onDrain);
    raw.on('close', onClose);
  });
}

function frame(event: StatusEvent): string {
  const data = {
    seq: event.seq,
    workspace_id: event.workspaceId,
    from: event.from,
    to: event.to,
    cause: event.cause,
    at: event.at,
    version: event.version,
  };
  return `id: ${event.seq}\nevent: status\ndata: ${JSON.stringify(data)}\n\n`;
}

const lastEventId = z
  .string()
  .regex(/^\d{1,15}$/, 'is a sequence number (digits)')
  .transform(Number);

export const eventRoutes: FastifyPluginCallbackZod<{ ctx: ApiContext }> = (app, { ctx }, done) => {
  const { settings, metrics } = ctx;
  const outbox = ctx.store.events;
  const feed = new EventFeed(outbox, (err) => app.log.warn({ err: String(err) }, 'events: reading the outbox failed'));
  const streams = new Set<ServerResponse>();
  // A function, not the flag: the preClose hook sets it while a stream awaits.
  let closingFlag = false;
  const closing = (): boolean => closingFlag;

  const sweep = (): void =>
    void outbox
      .deleteOlderThan(settings.events.retentionHours)
      .then((deleted) => {
        if (deleted > 0) app.log.info({ deleted }, 'events: deleted events past their retention');
      })
      .catch((err: unknown) => app.log.warn({ err: String(err) }, 'events: the retention sweep failed'));
  const sweeper = setInterval(sweep, RETENTION_SWEEP_MS);
  sweeper.unref();
  sweep();

  // Streams end before the server closes, which waits for open connections.
  app.addHook('preClose', (hookDone) => {
    closingFlag = true;
    clearInterval(sweeper);
    feed.wakeAll();
    for (const raw of streams) raw.end();
    hookDone();
  });

  app.addHook('onRequest', requireAdmin(settings.adminToken));

  /** Where a stream starts: after Last-Event-ID (a reconnect), else `after`, else the current end. */
  async function startingPoint(request: FastifyRequest, after: number | undefined): Promise<number> {
    const header = request.headers['last-event-id'];
    if (header !== undefined) {
      const parsed = lastEventId.safeParse(header);
      if (!parsed.success)
        throw new HttpError(400, 'invalid headers', {
          issues: [{ field: 'headers.last-event-id', problem: 'is a sequence number (digits)' }],
        });
      return parsed.data;
    }
    return after ?? (await ctx.db(() => outbox.lastSequence()));
  }

  app.get(
    EVENTS_PATH,
    {
      schema: {
        summary: 'Status changes as Server-Sent Events, resumable with Last-Event-ID',
        description:
          'Each event: `id` (its sequence number), `event: status`, `data` a JSON object (seq, workspace_id, from, ' +
          'to, cause, at, version). A resume from before the oldest event kept first gets one `event: gap`.',
        security: [{ bearer: [] }],
        querystring: z.strictObject({
          workspace: workspaceIdSchema.optional(),
          after: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
        }),
        headers: z.object({ 'last-event-id': z.string().optional() }),
        response: { 200: z.string(), ...errors(400, 401, 503) },
      },
    },
    async (request, reply) => {
      if (streams.size >= settings.events.maxStreams || closing())
        throw new HttpError(503, `${settings.events.maxStreams} event streams are open: try again later`, {
          retryAfter: DEPENDENCY_RETRY_AFTER_SECONDS,
        });
      const workspace = request.query.workspace ?? null;
      let cursor = await startingPoint(request, request.query.after);
      // The first event still kept; with none kept, the next one to come.
      const firstKept =
        (await ctx.db(() => outbox.oldestSequence())) ?? (await ctx.db(() => outbox.lastSequence())) + 1;

      void reply.hijack();
      const raw = reply.raw;
      raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      streams.add(raw);
      metrics.eventStreamOpened();
      let cut: StreamCut | null = null;
      try {
        let ok = await written(raw, 'retry: 2000\n\n');
        if (ok && cursor < firstKept - 1) {
          ok = await written(raw, `event: gap\ndata: ${JSON.stringify({ after: cursor, oldest: firstKept })}\n\n`);
          cursor = firstKept - 1;
        }
        while (ok && !closing()) {
          // Everything up to `committed` is in the outbox: read up to it, a page at a time.
          const committed = await outbox.lastSequence();
          if (committed > cursor) {
            const page = await outbox.read(cursor, workspace, PAGE, committed);
            if (page.length > 0) ok = await written(raw, page.map(frame).join(''));
            cursor = page.length === PAGE ? (page[PAGE - 1]?.seq ?? committed) : committed;
            continue;
          }
          const news = await feed.waitPast(cursor, KEEPALIVE_MS);
          if (!news && !closing()) ok = await written(raw, ': keepalive\n\n');
        }
        if (!ok && !raw.destroyed) cut = 'slow';
        if (closing()) cut = 'closing';
      } catch (err) {
        cut = 'error';
        request.log.warn({ err: String(err) }, 'events: a stream failed; its client resumes with Last-Event-ID');
      } finally {
        streams.delete(raw);
        metrics.eventStreamClosed(cut);
        // A cut-off client gets no more: the connection is dropped, and it resumes from its last id.
        if (cut === 'slow' || cut === 'error') raw.destroy();
        else raw.end();
      }
    },
  );

  done();
};
