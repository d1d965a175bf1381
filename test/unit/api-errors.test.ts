/**
 * What a failed dependency answers, and the admission limiter's refusals: pure, no server.
 */
import { QueryNotRegisteredError, WorkflowNotFoundError } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { Admission, defaultAdmissionSettings, type AdmissionSettings } from '../../api/admission.js';
import { HttpError, databaseFailure, temporalFailure } from '../../api/errors.js';

/** An error shaped as the gRPC client throws it (code, details, metadata), wrapped as the SDK wraps it. */
function grpcError(code: number, message: string): Error {
  const cause = Object.assign(new Error(message), { code, details: message, metadata: {} });
  return new Error(`call failed: ${message}`, { cause });
}

describe('temporalFailure', () => {
  it('unreachable Temporal is 503 with Retry-After; the signal was not delivered', () => {
    const failure = temporalFailure(grpcError(14, 'connect ECONNREFUSED'), { signal: true });
    expect(failure.statusCode).toBe(503);
    expect(failure.options.retryAfter).toBeGreaterThan(0);
    expect(failure.options.delivery).toBeUndefined();
    expect(failure.message).toMatch(/^Temporal unavailable/);
  });

  it('a signal past its deadline is 503 whose body says its fate is unknown', () => {
    const failure = temporalFailure(grpcError(4, 'Deadline exceeded'), { signal: true });
    expect(failure.statusCode).toBe(503);
    expect(failure.options.delivery).toBe('unknown');
    expect(failure.message).toContain('may have been delivered');
    // A query past its deadline delivered nothing.
    expect(temporalFailure(grpcError(4, 'Deadline exceeded'), { signal: false }).options.delivery).toBeUndefined();
  });

  it('Temporal answering with an error is 502, not "unavailable"', () => {
    const failure = temporalFailure(grpcError(3, 'query failed: workflow task failed'), { signal: false });
    expect(failure.statusCode).toBe(502);
    expect(failure.message).toMatch(/^Temporal answered with an error/);
    expect(failure.options.retryAfter).toBeUndefined();
  });

  it('a query the worker refused is 502: Temporal answered', () => {
    // gRPC's INVALID_ARGUMENT; its enum lives in a package that is no dependency of ours.
    // eslint-disable-next-line @typescript-eslint/no-unsafe-enum-assignment
    const invalidArgument = 3 as ConstructorParameters<typeof QueryNotRegisteredError>[1];
    const refused = new QueryNotRegisteredError('no such query', invalidArgument);
    expect(temporalFailure(refused, { signal: false }).statusCode).toBe(502);
  });

  it('a missing workflow is 404; an HttpError passes through', () => {
    expect(
      temporalFailure(new WorkflowNotFoundError('gone', 'workspace:x', undefined), { signal: true }).statusCode,
    ).toBe(404);
    const own = new HttpError(409, 'mine');
    expect(temporalFailure(own, { signal: false })).toBe(own);
  });

  it('an unreachable database is 503 with Retry-After', () => {
    const failure = databaseFailure(new Error('connect ECONNREFUSED 127.0.0.1:5432'));
    expect([failure.statusCode, failure.options.retryAfter]).toEqual([503, 5]);
  });
});

describe('Admission', () => {
  // A target no call misses: the limit stays at maxInFlight.
  const fixed: AdmissionSettings = { ...defaultAdmissionSettings, targetLatencyMs: 60_000, retryAfterSeconds: 1 };

  function gate(): { promise: Promise<void>; open: () => void } {
    let open = (): void => undefined;
    const promise = new Promise<void>((resolve) => (open = resolve));
    return { promise, open };
  }

  it('serves maxInFlight at once, queues maxQueued, refuses the rest at once with 429', async () => {
    const admission = new Admission({ ...fixed, maxInFlight: 2, maxQueued: 1, maxQueueWaitMs: 10_000 });
    const held = gate();
    const order: number[] = [];
    const calls = [1, 2, 3].map((n) =>
      admission.run(async () => {
        order.push(n);
        await held.promise;
        return n;
      }),
    );
    await Promise.resolve();
    expect(admission.load).toMatchObject({ inFlight: 2, queued: 1 });
    const refused = await admission.run(() => Promise.resolve(4)).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(HttpError);
    expect((refused as HttpError).statusCode).toBe(429);
    expect((refused as HttpError).options.retryAfter).toBe(1);
    held.open();
    expect(await Promise.all(calls)).toEqual([1, 2, 3]);
    expect(order).toEqual([1, 2, 3]);
    expect(admission.load).toMatchObject({ inFlight: 0, queued: 0 });
    expect(admission.refused).toEqual({ queueFull: 1, waitedTooLong: 0 });
  });

  it("Retry-After spreads the refused callers' return over the last second's refusals per admission", async () => {
    let clock = 0;
    const admission = new Admission({ ...fixed, maxInFlight: 2, maxQueued: 0 }, () => clock);
    const held = gate();
    const refusedNow = async (): Promise<number | undefined> => {
      const err = await admission.run(() => Promise.resolve()).catch((e: unknown) => e);
      return (err as HttpError).options.retryAfter;
    };
    const busy = [admission.run(() => held.promise), admission.run(() => held.promise)];
    // The first second: 2 admitted, 40 refused; nothing to go by yet, so the floor.
    for (let i = 0; i < 39; i++) await refusedNow();
    expect(await refusedNow()).toBe(1);
    clock = 1_500;
    expect(await refusedNow()).toBe(20); // 40 refused / 2 admitted
    clock = 2_600;
    // The second before refused 1 and admitted none: 1 / max(1, 0).
    expect(await refusedNow()).toBe(1);
    clock = 3_700;
    for (let i = 0; i < 400; i++) await refusedNow();
    clock = 4_800;
    expect(await refusedNow()).toBe(30); // capped
    clock = 10_000;
    expect(await refusedNow()).toBe(1); // a quiet gap: the floor again
    held.open();
    await Promise.all(busy);
  });

  it('a call that waits too long for a slot is refused and gives its place up', async () => {
    const admission = new Admission({ ...fixed, maxInFlight: 1, maxQueued: 5, maxQueueWaitMs: 20 });
    const held = gate();
    const first = admission.run(() => held.promise);
    const waited = await admission.run(() => Promise.resolve('late')).catch((err: unknown) => err);
    expect((waited as HttpError).statusCode).toBe(429);
    expect(admission.load).toMatchObject({ inFlight: 1, queued: 0 });
    held.open();
    await first;
    expect(await admission.run(() => Promise.resolve('next'))).toBe('next');
    expect(admission.refused.waitedTooLong).toBe(1);
  });

  it('the limit shrinks while calls are slower than the target and grows back when they are fast', async () => {
    let clock = 0;
    const settings = { ...defaultAdmissionSettings, maxInFlight: 32, minInFlight: 4, targetLatencyMs: 300 };
    const admission = new Admission(settings, () => clock);
    const call = (ms: number): Promise<void> =>
      admission.run(() => {
        clock += ms;
        return Promise.resolve();
      });
    expect(admission.load.limit).toBe(32);
    // Two slow calls admitted together: one cut (32 → 24), not two.
    let release = (): void => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const both = [admission.run(() => held), admission.run(() => held)];
    await new Promise((resolve) => setImmediate(resolve)); // both admitted and started
    clock += 500;
    release();
    await Promise.all(both);
    expect(admission.load.limit).toBe(24);
    for (let i = 0; i < 20; i++) await call(500);
    expect(admission.load.limit).toBe(4); // never below minInFlight
    for (let i = 0; i < 200; i++) await call(10);
    expect(admission.load.limit).toBeGreaterThan(16); // about one more per `limit` fast calls
    for (let i = 0; i < 2_000; i++) await call(10);
    expect(admission.load.limit).toBe(32); // never above maxInFlight
  });

  it('a failing call frees its slot', async () => {
    const admission = new Admission({ ...fixed, maxInFlight: 1, maxQueued: 0, maxQueueWaitMs: 10 });
    await expect(admission.run(() => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(admission.load.inFlight).toBe(0);
  });
});
