/**
 * Load on the API as runtimes and operators make it: JSON calls, workspaces created in bulk, and
 * one heartbeat load generator. Every answer the generator gets is recorded (who, status, latency,
 * when it was sent and how late), so a bench reads its throughput and latency from them and a
 * chaos row compares what was acknowledged with what the workflows recorded.
 */
import { Agent, request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { idleHeartbeat } from '../../workflows/payloads.js';
import { countBy, countsText } from './stats.js';

/** A workspace as its runtime knows it: its id and its token. */
export interface Runtime {
  id: string;
  token: string;
}

export interface CallAnswer {
  /** HTTP status; 0 for a network error (refused connection, reset, timeout). */
  status: number;
  /** The JSON body, else its text (null on a network error). */
  body: unknown;
  ms: number;
  /** Of `ms`, how long the call waited in this process for a connection (all `maxSockets` busy). */
  socketWaitMs: number;
  /** Retry-After in seconds, when the answer had one. */
  retryAfter?: number;
}

const agent = new Agent({ keepAlive: true, maxSockets: 512 });
const TIMEOUT_MS = 15_000;

/** One JSON call to the API; never rejects (a network error is status 0). */
export function call(url: string, method: string, body: unknown, bearer?: string): Promise<CallAnswer> {
  const started = performance.now();
  let socketAt: number | undefined;
  const timing = (): { ms: number; socketWaitMs: number } => {
    const now = performance.now();
    return { ms: now - started, socketWaitMs: (socketAt ?? now) - started };
  };
  return new Promise((resolve) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      url,
      {
        method,
        agent,
        timeout: TIMEOUT_MS,
        headers: {
          ...(payload !== undefined ? { 'content-type': 'application/json' } : {}),
          ...(bearer !== undefined ? { authorization: `Bearer ${bearer}` } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // not JSON: keep the text
          }
          const retryAfter = Number(res.headers['retry-after']);
          resolve({
            status: res.statusCode ?? 0,
            body: parsed,
            ...timing(),
            ...(Number.isFinite(retryAfter) && res.headers['retry-after'] !== undefined ? { retryAfter } : {}),
          });
        });
        res.on('error', () => resolve({ status: 0, body: null, ...timing() }));
      },
    );
    req.once('socket', () => (socketAt = performance.now()));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ status: 0, body: null, ...timing() }));
    req.end(payload);
  });
}

/**
 * One call, sent again while its answer's status is in `retryOn`, up to `attempts` calls in all:
 * after the answer's Retry-After (1 s without one), with ±50% jitter, as runtimes back off.
 */
export async function callRetrying(
  url: string,
  method: string,
  body: unknown,
  bearer: string,
  retryOn: readonly number[],
  attempts = 20,
): Promise<CallAnswer> {
  for (let attempt = 1; ; attempt++) {
    const answer = await call(url, method, body, bearer);
    if (!retryOn.includes(answer.status) || attempt >= attempts) return answer;
    await sleep(1_000 * (answer.retryAfter ?? 1) * (0.5 + Math.random()));
  }
}

/** Runs `work` for every item with at most `concurrency` at once. */
export async function bounded<T>(
  items: readonly T[],
  concurrency: number,
  work: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    for (let i = next++; i < items.length; i = next++) await work(items[i] as T, i);
  });
  await Promise.all(lanes);
}

export interface CreateOptions {
  /** Each create goes to the next API in turn. */
  apiUrls: readonly string[];
  adminToken: string;
  ids: readonly string[];
  plugins?: { name: string; source: string }[];
  concurrency: number;
  /** Statuses a create is sent again after (Retry-After); 429 always means nothing was done. */
  retryOn: readonly number[];
  /** Called after each workspace created, with it (progress; or its runtime starts at once). */
  onCreated?: (runtime: Runtime) => void;
}

export interface Created {
  /** The workspaces created, in the order of `ids`. */
  runtimes: Runtime[];
  /** The creates that failed, with their last answer. */
  failures: { id: string; status: number; body: unknown }[];
}

/** Creates the workspaces through the API (`POST /workspaces`); each created one comes back with its token. */
export async function createWorkspaces(o: CreateOptions): Promise<Created> {
  const runtimes: (Runtime | undefined)[] = new Array<Runtime | undefined>(o.ids.length);
  const failures: Created['failures'] = [];
  await bounded(o.ids, o.concurrency, async (id, i) => {
    const url = `${o.apiUrls[i % o.apiUrls.length] ?? ''}/workspaces`;
    const body = { id, ...(o.plugins === undefined ? {} : { plugins: o.plugins }) };
    const answer = await callRetrying(url, 'POST', body, o.adminToken, o.retryOn);
    const token = (answer.body as { auth_token?: unknown } | null)?.auth_token;
    if (answer.status === 201 && typeof token === 'string') {
      const runtime = { id, token };
      runtimes[i] = runtime;
      o.onCreated?.(runtime);
    } else {
      failures.push({ id, status: answer.status, body: answer.body });
    }
  });
  return { runtimes: runtimes.filter((r): r is Runtime => r !== undefined), failures };
}

/** One heartbeat's answer, as the generator recorded it. */
export interface Answer {
  workspaceId: string;
  /** HTTP status; 0 for a network error (refused connection, reset, timeout). */
  status: number;
  ms: number;
  /** Of `ms`, the wait in the generator for a connection. */
  socketWaitMs: number;
  /** When it was sent, in ms since the load started. */
  at: number;
  /** How long after its due time it was sent (held back by `maxInFlight`). */
  lagMs: number;
  /** A call sent again after a refusal's Retry-After. */
  retry: boolean;
  /** A 503 whose body says the signal may have been delivered. */
  deliveryUnknown: boolean;
}

/** `200: 812, 503: 40, net: 3` (`net`: network errors). */
export function byStatus(answers: readonly Answer[]): string {
  return countsText(countBy(answers, statusKey));
}

/** An answer's status as a key: `net` for a network error. */
export function statusKey(answer: { status: number }): string {
  return answer.status === 0 ? 'net' : String(answer.status);
}

/**
 * How the generator paces each workspace's heartbeats:
 * - `open`: every beat on its slot, whatever came of the ones before (an open loop: the offered
 *   rate holds however slow the answers get), to the workspaces in turn; a beat due while
 *   `maxInFlight` calls are in flight is skipped and counted, so the generator never queues on
 *   its own side, and the workspace whose turn it was gets the next one.
 * - `runtime`: as runtimes send them: a workspace's next beat waits for the answer to its last;
 *   a 429 or 503 is sent again after its Retry-After (±50% jitter) unless the next beat is due
 *   first; a beat due while `maxInFlight` calls are in flight waits for one and is sent late.
 */
export type Pace = 'open' | 'runtime';

export interface HeartbeatLoadOptions {
  /** Each call goes to the next API in turn. */
  apiUrls: readonly string[];
  runtimes: readonly Runtime[];
  /**
   * Heartbeats per second over all the runtimes: each beats once per `runtimes.length / rate`
   * seconds, runtime i offset by i / runtimes.length of that period, so the load is even.
   */
  rate: number;
  /**
   * Each runtime beats once per this many ms instead (`rate` is then ignored until `setRate`):
   * for a load whose runtimes are added as their workspaces are created (`add`).
   */
  periodMs?: number;
  maxInFlight: number;
  pace: Pace;
}

interface Due {
  index: number;
  /** When to send, ms since the start. */
  due: number;
  /** The slot of the workspace's cadence this send serves (a retry keeps its slot). */
  slot: number;
  retry: boolean;
  /** The schedule it belongs to: a rate change starts a new one. */
  generation: number;
}

/** Idle heartbeats at a steady rate over a set of workspaces, each call with its workspace's token. */
export class HeartbeatLoad {
  readonly answers: Answer[] = [];
  /** Beats not sent because `maxInFlight` calls were in flight (`open` pace). */
  skipped = 0;
  /** Calls sent so far. */
  sent = 0;
  private inFlightNow = 0;
  private readonly schedule = new Schedule();
  private generation = 0;
  private periodMs: number;
  private startedAt = 0;
  private nextApi = 0;
  /** `open` pace: the workspace whose turn is next. */
  private nextInTurn = 0;
  private running: Promise<void> | undefined;
  private stopping = false;
  private readonly drained: (() => void)[] = [];
  private readonly runtimes: Runtime[];
  /** Workspaces whose runtime stopped beating (`silence`). */
  private readonly silenced = new Set<string>();

  constructor(private readonly o: HeartbeatLoadOptions) {
    this.runtimes = [...o.runtimes];
    this.periodMs = o.periodMs ?? this.periodFor(o.rate);
  }

  /** Milliseconds since the load started. */
  now(): number {
    return performance.now() - this.startedAt;
  }

  /** Calls sent and not answered yet. */
  get inFlight(): number {
    return this.inFlightNow;
  }

  start(): void {
    this.startedAt = performance.now();
    this.slotAll(0);
    this.running = this.run();
  }

  /** Changes the offered rate from now on: every workspace's cadence starts again from now, evenly spread. */
  setRate(rate: number): void {
    this.periodMs = this.periodFor(rate);
    this.slotAll(this.now());
  }

  /** A runtime more (its workspace was just created): its first beat now, then one per period. */
  add(runtime: Runtime): void {
    const index = this.runtimes.push(runtime) - 1;
    const due = this.now();
    this.schedule.push({ index, due, slot: due, retry: false, generation: this.generation });
  }

  /** These workspaces' runtimes stop beating from now on, as a dead box's does (a call in flight still lands). */
  silence(ids: Iterable<string>): void {
    for (const id of ids) this.silenced.add(id);
  }

  /** Stops sending and waits for every call in flight to be answered (each is bounded by the call's timeout). */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.running;
    if (this.inFlightNow > 0) await new Promise<void>((resolve) => this.drained.push(resolve));
  }

  /** Acknowledged (200) heartbeats per workspace. */
  acked(): Map<string, number> {
    return countBy(
      this.answers.filter((answer) => answer.status === 200),
      (answer) => answer.workspaceId,
    );
  }

  /** Answers to calls sent within [from, to) ms of the start. */
  between(from: number, to: number): Answer[] {
    return this.answers.filter((answer) => answer.at >= from && answer.at < to);
  }

  private periodFor(rate: number): number {
    return (this.runtimes.length / rate) * 1_000;
  }

  private slotAll(from: number): void {
    this.generation++;
    this.schedule.clear();
    const n = this.runtimes.length;
    for (let index = 0; index < n; index++) {
      const slot = from + (index / n) * this.periodMs;
      this.schedule.push({ index, due: slot, slot, retry: false, generation: this.generation });
    }
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      const now = this.now();
      for (let top = this.schedule.peek(); top !== undefined && top.due <= now; top = this.schedule.peek()) {
        if (this.inFlightNow >= this.o.maxInFlight) {
          if (this.o.pace === 'runtime') break;
          this.schedule.pop();
          this.skipped++;
          this.schedule.push(this.following(top));
          continue;
        }
        this.send(this.schedule.pop() as Due);
      }
      const top = this.schedule.peek();
      const wait =
        top === undefined || this.inFlightNow >= this.o.maxInFlight ? 5 : Math.max(1, Math.min(50, top.due - now));
      await sleep(wait);
    }
  }

  /** The workspace's beat after `item`, at its next slot, not before `notBefore`. */
  private following(item: Due, notBefore = 0): Due {
    const slot = item.slot + this.periodMs;
    return { index: item.index, slot, due: Math.max(slot, notBefore), retry: false, generation: item.generation };
  }

  private send(item: Due): void {
    const runtime = this.runtimes[this.o.pace === 'open' ? this.nextInTurn++ % this.runtimes.length : item.index];
    if (runtime === undefined) return;
    if (this.silenced.has(runtime.id)) {
      // Its turn passes (open pace); in runtime pace its beats end here.
      if (this.o.pace === 'open') this.schedule.push(this.following(item));
      return;
    }
    const at = this.now();
    const lagMs = at - item.due;
    this.sent++;
    this.inFlightNow++;
    if (this.o.pace === 'open') this.schedule.push(this.following(item));
    const url = `${this.o.apiUrls[this.nextApi++ % this.o.apiUrls.length] ?? ''}/registry/heartbeat`;
    void call(url, 'POST', idleHeartbeat(runtime.id, Math.round(at / 1000)), runtime.token).then(
      ({ status, body, ms, socketWaitMs, retryAfter }) => {
        const deliveryUnknown = (body as { delivery?: unknown } | null)?.delivery === 'unknown';
        this.answers.push({
          workspaceId: runtime.id,
          status,
          ms,
          socketWaitMs,
          at,
          lagMs,
          retry: item.retry,
          deliveryUnknown,
        });
        this.inFlightNow--;
        if (this.o.pace === 'runtime' && item.generation === this.generation)
          this.scheduleAfter(item, status, retryAfter);
        if (this.inFlightNow === 0 && this.stopping) this.drained.splice(0).forEach((resolve) => resolve());
      },
    );
  }

  /** `runtime` pace: the workspace's next beat once its last was answered. */
  private scheduleAfter(item: Due, status: number, retryAfter: number | undefined): void {
    const answeredAt = this.now();
    const retryAt = retryAfter === undefined ? Infinity : answeredAt + retryAfter * 1_000 * (0.5 + Math.random());
    if ((status === 429 || status === 503) && retryAt < item.slot + this.periodMs)
      this.schedule.push({ ...item, due: retryAt, retry: true });
    else this.schedule.push(this.following(item, answeredAt));
  }
}

/** A binary min-heap of sends on `due`. */
class Schedule {
  private heap: Due[] = [];

  peek(): Due | undefined {
    return this.heap[0];
  }

  clear(): void {
    this.heap = [];
  }

  push(item: Due): void {
    const heap = this.heap;
    heap.push(item);
    for (let i = heap.length - 1; i > 0;) {
      const parent = (i - 1) >> 1;
      if ((heap[parent] as Due).due <= item.due) break;
      heap[i] = heap[parent] as Due;
      heap[parent] = item;
      i = parent;
    }
  }

  pop(): Due | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    heap[0] = last;
    for (let i = 0; ;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let least = i;
      if (left < heap.length && (heap[left] as Due).due < (heap[least] as Due).due) least = left;
      if (right < heap.length && (heap[right] as Due).due < (heap[least] as Due).due) least = right;
      if (least === i) break;
      [heap[i], heap[least]] = [heap[least] as Due, heap[i] as Due];
      i = least;
    }
    return top;
  }
}
