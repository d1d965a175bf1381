/**
 * The heartbeat route against "forward every heartbeat", for the cases of issue 29 that are about
 * answers and forwards: real PostgreSQL (the ledger's one statement, the contract each workflow
 * publishes), the time-skipping Temporal server and a real worker. Each test names its case.
 */
import type { Client, WorkflowHandle } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { defaultAdmissionSettings } from '../../api/admission.js';
import { buildApi } from '../../api/server.js';
import { hashSecret } from '../../db/secrets.js';
import { stateQuery } from '../../workflows/definitions.js';
import { admin, registerBody, useApiHarness } from '../helpers/api.js';
import { createTimeSkippingEnv } from '../helpers/env.js';
import { heartbeatPayload } from '../helpers/payloads.js';
import { waitForState } from '../helpers/worker.js';

const harness = useApiHarness('registry-heartbeat-tests');

type Bearer = { authorization: string };
const send = (server: typeof harness.api, id: string, bearer: Bearer, extra: Record<string, unknown> = {}) =>
  server.inject({ method: 'POST', url: '/registry/heartbeat', headers: bearer, payload: heartbeatPayload(id, extra) });

/** Waits until the ledger holds the contract the workflow last published. */
async function contractPublished(id: string, handle: WorkflowHandle): Promise<void> {
  await expect
    .poll(async () => {
      const { livenessContract } = await handle.query(stateQuery);
      return (await harness.store.heartbeats.read(id)).wantVersion === livenessContract?.version;
    })
    .toBe(true);
}

type Signal = WorkflowHandle['signal'];

/** A client whose workspace handles' `signal` is `signal(theRealOne, ...args)`; everything else is the client's. */
function withSignal(client: Client, signal: (real: Signal, ...args: Parameters<Signal>) => Promise<void>): Client {
  const getHandle = (workflowId: string): WorkflowHandle => {
    const handle = client.workflow.getHandle(workflowId);
    return new Proxy(handle, {
      get: (target, property) =>
        property === 'signal'
          ? (...args: Parameters<Signal>) => signal(target.signal.bind(target), ...args)
          : (Reflect.get(target, property) as unknown),
    });
  };
  const workflow = new Proxy(client.workflow, {
    get: (target, property) => (property === 'getHandle' ? getHandle : (Reflect.get(target, property) as unknown)),
  });
  return new Proxy(client, {
    get: (target, property) => (property === 'workflow' ? workflow : (Reflect.get(target, property) as unknown)),
  });
}

/**
 * A client whose workspace signals land and whose answers are lost: what the API sees when
 * Temporal took the signal and the connection failed before it said so.
 */
const answersLost = (client: Client): Client =>
  withSignal(client, async (real, ...args) => {
    await real(...args);
    throw new Error('the connection closed before Temporal answered');
  });

/**
 * A client whose workspace signals wait until `release` is called, then land: Temporal taking
 * its time over every signal (a fleet registering at once, a server behind).
 */
function signalsStalled(client: Client): { client: Client; release: () => void } {
  let release = (): void => undefined;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  const stalled = withSignal(client, async (real, ...args) => {
    await released;
    await real(...args);
  });
  return { client: stalled, release };
}

describe('issue 29: heartbeat answers and forwards', () => {
  it('case 2: a wanted heartbeat that does not reach the workflow is 503 and records nothing; its retry is wanted again', async () => {
    const { id, bearer, handle } = await harness.registeredOnline();
    await contractPublished(id, handle);
    expect((await send(harness.api, id, bearer)).statusCode).toBe(200);
    expect((await send(harness.api, id, bearer)).statusCode).toBe(200);
    const before = await harness.store.heartbeats.read(id);
    // An API whose Temporal calls all fail: the degrading heartbeat is 503, and nothing is recorded.
    const doomed = await createTimeSkippingEnv();
    const broken = await buildApi(doomed.client, harness.store, harness.settings({ temporalTimeoutMs: 2_000 }));
    await doomed.teardown();
    try {
      const failed = await send(broken, id, bearer, { error_rate: 0.9 });
      expect(failed.statusCode, failed.body).toBe(503);
    } finally {
      await broken.close();
    }
    expect(await harness.store.heartbeats.read(id)).toEqual(before);
    // An API that stopped between its statement and the signal: decided wanted, nothing followed.
    const token = hashSecret(bearer.authorization.slice('Bearer '.length));
    const decided = await harness.store.heartbeats.record(token, id, {
      errorRate: 0.9,
      runtimeState: '',
      managesOwnStatus: false,
      bringsCard: false,
      activeTasks: 0,
    });
    expect(decided).toMatchObject({ wanted: true });
    // The runtime's retry is wanted again, forwarded, and degrades the workspace at once.
    expect((await send(harness.api, id, bearer, { error_rate: 0.9 })).statusCode).toBe(200);
    const degraded = await waitForState(handle, (s) => s.status === 'degraded');
    expect(degraded.counters.heartbeats).toBe(1);
    expect((await harness.store.heartbeats.read(id)).beats).toBe(3);
  });

  it('case 3: a heartbeat is never signalled after its answer; a healthy one cannot undo a degrade', async () => {
    const { id, bearer, handle } = await harness.registeredOnline();
    await contractPublished(id, handle);
    // A degrade refused with 503 is not delivered later: the workflow never sees it.
    const doomed = await createTimeSkippingEnv();
    const broken = await buildApi(doomed.client, harness.store, harness.settings({ temporalTimeoutMs: 2_000 }));
    await doomed.teardown();
    const signalsBefore = await harness.signalsReceived(id);
    try {
      expect((await send(broken, id, bearer, { error_rate: 0.9 })).statusCode).toBe(503);
    } finally {
      await broken.close(); // waits for anything it still had under way
    }
    expect(await harness.signalsReceived(id)).toBe(signalsBefore);
    // Healthy heartbeats around a degrading one, all at once: each answered 200, and by its answer
    // a forwarded one is in the workflow's history; the degrade stands.
    const answers = await Promise.all([
      send(harness.api, id, bearer),
      send(harness.api, id, bearer, { error_rate: 0.9 }),
      send(harness.api, id, bearer),
      send(harness.api, id, bearer, { error_rate: 0.2 }),
    ]);
    expect(answers.map((answer) => answer.statusCode)).toEqual([200, 200, 200, 200]);
    expect(await harness.signalsReceived(id)).toBe(signalsBefore + 1);
    await waitForState(handle, (s) => s.status === 'degraded');
    await contractPublished(id, handle);
    // Degraded, the workflow wants only a heartbeat that recovers (below 0.1): one at 0.2 or 0.9
    // is recorded, not forwarded, and the one at 0 brings it online. (Sent after the recovery,
    // one at 0.9 would be wanted again, as soon as the online contract is published.)
    for (const rate of [0.2, 0.9, 0])
      expect((await send(harness.api, id, bearer, { error_rate: rate })).statusCode).toBe(200);
    const last = await waitForState(handle, (s) => s.counters.heartbeats === 2);
    expect(last.status).toBe('online');
    expect(last.lastHeartbeat?.errorRate).toBe(0);
  });

  it('case 4: a re-register racing a degrade leaves no wrong guess: the next degrading heartbeat degrades', async () => {
    const { id, bearer, handle } = await harness.registeredOnline();
    await contractPublished(id, handle);
    const [registered, degrading] = await Promise.all([
      harness.api.inject({ method: 'POST', url: '/registry/register', headers: bearer, payload: registerBody(id) }),
      send(harness.api, id, bearer, { error_rate: 0.9 }),
    ]);
    expect([registered.statusCode, degrading.statusCode]).toEqual([200, 200]);
    await waitForState(handle, (s) => s.counters.registers === 2 && s.counters.heartbeats === 1);
    await contractPublished(id, handle);
    // Whichever landed last, the workflow said what it wants after both: a degrading heartbeat
    // degrades it now if the register came last, and leaves it degraded if the degrade did.
    expect((await send(harness.api, id, bearer, { error_rate: 0.9 })).statusCode).toBe(200);
    expect((await waitForState(handle, (s) => s.status === 'degraded')).status).toBe('degraded');
  });

  it("case 7: an API with other thresholds forwards by the workflow's own: a heartbeat that degrades under them is forwarded", async () => {
    const { id, bearer, handle } = await harness.registeredOnline();
    await contractPublished(id, handle);
    // The workflow started with the degrade threshold 0.5; this API was configured with 0.3 since.
    const lowered = await buildApi(
      harness.env.client,
      harness.store,
      harness.settings({ lifecycle: { degradeErrorRate: 0.3 } }),
    );
    try {
      expect((await send(lowered, id, bearer, { error_rate: 0.35 })).statusCode).toBe(200);
      expect((await send(lowered, id, bearer, { error_rate: 0.6 })).statusCode).toBe(200);
      const degraded = await waitForState(handle, (s) => s.status === 'degraded');
      expect(degraded.lastHeartbeat?.errorRate).toBe(0.6);
    } finally {
      await lowered.close();
    }
  });

  it('case 8: a forward whose answer was lost is counted once: by the workflow that has it, and not by the ledger', async () => {
    const { id, bearer, handle } = await harness.registeredOnline();
    await contractPublished(id, handle);
    expect((await send(harness.api, id, bearer)).statusCode).toBe(200);
    const lossy = await buildApi(answersLost(harness.env.client), harness.store, harness.settings());
    try {
      const lost = await send(lossy, id, bearer, { error_rate: 0.9 });
      expect(lost.statusCode).toBeGreaterThanOrEqual(500);
    } finally {
      await lossy.close();
    }
    const degraded = await waitForState(handle, (s) => s.status === 'degraded');
    expect(degraded.counters.heartbeats).toBe(1);
    expect((await harness.store.heartbeats.read(id)).beats).toBe(1);
    // The runtime sends it again: not wanted any more (the workflow moved on), recorded once.
    await contractPublished(id, handle);
    expect((await send(harness.api, id, bearer, { error_rate: 0.9 })).statusCode).toBe(200);
    expect((await handle.query(stateQuery)).counters.heartbeats).toBe(1);
    const read = await harness.api.inject({ method: 'GET', url: `/workspaces/${id}`, headers: admin });
    expect(read.json<{ heartbeatLedger: { beats: number } }>().heartbeatLedger.beats).toBe(2);
  });

  it('relays waiting on Temporal hold slots of their own: heartbeats the workflow does not want are still answered 200', async () => {
    const { id, bearer, handle } = await harness.registeredOnline();
    await contractPublished(id, handle);
    const before = (await harness.store.heartbeats.read(id)).beats;
    const { client, release } = signalsStalled(harness.env.client);
    const admission = {
      ...defaultAdmissionSettings,
      maxInFlight: 2,
      maxRelaysInFlight: 2,
      maxQueued: 8,
      maxQueueWaitMs: 1_000,
      targetLatencyMs: 60_000,
    };
    const stalled = await buildApi(client, harness.store, harness.settings({ admission }));
    try {
      // Two degrading heartbeats (wanted) wait for their signals in both relay slots.
      const relays = [send(stalled, id, bearer, { error_rate: 0.9 }), send(stalled, id, bearer, { error_rate: 0.9 })];
      await expect.poll(() => harness.metric('api_admission_in_flight', { pool: 'relays' }, stalled)).toBe(2);
      // Heartbeats the workflow does not want are one statement each: answered 200 meanwhile,
      // six at once through two call slots and their queue.
      const healthy = await Promise.all(Array.from({ length: 6 }, () => send(stalled, id, bearer)));
      expect(healthy.map((answer) => answer.statusCode)).toEqual([200, 200, 200, 200, 200, 200]);
      expect((await harness.store.heartbeats.read(id)).beats).toBe(before + 6);
      // A third relay finds no relay slot within the queue's wait: 429, and nothing recorded.
      const refused = await send(stalled, id, bearer, { error_rate: 0.9 });
      expect(refused.statusCode).toBe(429);
      expect(refused.headers['retry-after']).toBeDefined();
      expect((await harness.store.heartbeats.read(id)).beats).toBe(before + 6);
      const scrape = await stalled.inject({ method: 'GET', url: '/metrics' });
      expect(scrape.body).toContain('api_admission_refused{pool="relays",reason="waited_too_long"} 1');
      expect(scrape.body).toContain('api_admission_refused{pool="calls",reason="waited_too_long"} 0');
      // Temporal catches up: the two relays are answered once the workflow has them.
      release();
      expect((await Promise.all(relays)).map((answer) => answer.statusCode)).toEqual([200, 200]);
      await waitForState(handle, (s) => s.status === 'degraded');
    } finally {
      release();
      await stalled.close();
    }
  });

  it('the ledger keeps the active tasks of every heartbeat, up to the largest count a runtime may send', async () => {
    const { id, bearer, handle } = await harness.registeredOnline();
    await contractPublished(id, handle);
    for (const activeTasks of [3, Number.MAX_SAFE_INTEGER, 0]) {
      expect((await send(harness.api, id, bearer, { active_tasks: activeTasks })).statusCode).toBe(200);
      expect((await harness.store.heartbeats.reading(id, 'none')).activeTasks).toBe(activeTasks);
    }
  });
});
