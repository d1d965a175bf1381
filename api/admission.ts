/**
 * Admission control: the API serves at most `limit` calls that reach Temporal or the database
 * at once, lets at most `maxQueued` more wait briefly for a slot, and refuses the rest at once
 * with 429 and Retry-After. Past what the system can serve, a queue only adds latency to every
 * call and memory to the process; refusing the excess keeps the accepted calls fast and tells
 * the caller when to come back.
 *
 * Relays (a register, a heartbeat the workflow wants) wait on a workflow's signal, which is slow
 * when Temporal is: they have slots of their own (`maxRelaysInFlight`), so a backlog of signals
 * never takes the slots of heartbeats that are one statement in the ledger. A heartbeat takes a
 * call slot for its statement, then, when wanted, a relay slot for its signal.
 *
 * The limit adapts (additive increase, multiplicative decrease, as TCP's congestion window):
 * while calls finish within `targetLatencyMs` it grows by about one per `limit` calls, up to
 * `maxInFlight`; a call slower than that shrinks it by a quarter (once for all the calls
 * admitted before the cut), down to `minInFlight`. So when the box slows down (another process takes the CPU,
 * Temporal is busy), fewer calls are let in and the accepted ones stay fast.
 *
 * Retry-After grows with the overload: when the last second refused R calls while admitting A,
 * a refusal says come back in R / A seconds (at least `retryAfterSeconds`, at most
 * `maxRetryAfterSeconds`), so callers that honour it spread their retries over about the time
 * the API needs to serve them, instead of all coming back a second later.
 */
import { HttpError } from './errors.js';

export interface AdmissionSettings {
  /** The most calls served at once. */
  maxInFlight: number;
  /** The most relays (a register, a wanted heartbeat's signal) served at once, in slots of their own. */
  maxRelaysInFlight: number;
  /** The fewest calls served at once, however slow they are. */
  minInFlight: number;
  /** A call slower than this (its own work, not its wait for a slot) lowers the limit. */
  targetLatencyMs: number;
  /** Calls that may wait for a slot; one more is refused at once. */
  maxQueued: number;
  /** A call that waited this long for a slot is refused. */
  maxQueueWaitMs: number;
  /** What a refusal's Retry-After says at least, in seconds. */
  retryAfterSeconds: number;
  /** What it says at most, however overloaded the last second was. */
  maxRetryAfterSeconds: number;
}

/**
 * Sized for one 2-core box running everything (dev server, worker, API, PostgreSQL): past
 * `maxInFlight` the throughput no longer grows, only the latency does. The queue rides out a
 * short stall (a pause of the API's process or of the database on a busy box), after which the
 * calls that arrived during it come in at once; under a lasting overload it stays full and the
 * excess is refused at once, none waiting more than `maxQueueWaitMs`. docs/performance.md has
 * the measurements behind each number.
 */
export const defaultAdmissionSettings: AdmissionSettings = {
  maxInFlight: 32,
  maxRelaysInFlight: 32,
  minInFlight: 4,
  targetLatencyMs: 500,
  maxQueued: 128,
  maxQueueWaitMs: 250,
  retryAfterSeconds: 1,
  maxRetryAfterSeconds: 30,
};

interface Waiter {
  admit: () => void;
  timer: NodeJS.Timeout;
}

export class Admission {
  private inFlight = 0;
  private readonly waiting: Waiter[] = [];
  /** The current limit; fractional so the additive increase can be gradual. */
  private limit: number;
  private lastDecreaseAt = -Infinity;
  /** Refusals since start, by why: the queue was full, or the wait for a slot ran out. */
  readonly refused = { queueFull: 0, waitedTooLong: 0 };
  /** Admissions and refusals of the current second, and of the one before (what Retry-After reads). */
  private second = { start: 0, admitted: 0, refused: 0 };
  private lastSecond = { admitted: 0, refused: 0 };

  constructor(
    private readonly settings: AdmissionSettings,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.limit = settings.maxInFlight;
    this.second.start = now();
  }

  /** Starts a new second when this one is over; a gap of more than a second leaves nothing to go by. */
  private tick(): void {
    const at = this.now();
    const elapsed = at - this.second.start;
    if (elapsed < 1_000) return;
    this.lastSecond =
      elapsed < 2_000 ? { admitted: this.second.admitted, refused: this.second.refused } : { admitted: 0, refused: 0 };
    this.second = { start: at, admitted: 0, refused: 0 };
  }

  /** Seconds a refused caller should wait: the last second's refusals per admission, within the bounds. */
  retryAfterSeconds(): number {
    this.tick();
    const { retryAfterSeconds, maxRetryAfterSeconds } = this.settings;
    const { admitted, refused } = this.lastSecond;
    const spread = Math.ceil(refused / Math.max(1, admitted));
    return Math.min(Math.max(retryAfterSeconds, maxRetryAfterSeconds), Math.max(retryAfterSeconds, spread));
  }

  get load(): { inFlight: number; queued: number; limit: number } {
    return { inFlight: this.inFlight, queued: this.waiting.length, limit: Math.floor(this.limit) };
  }

  /** Every slot is taken and the queue is full: a call arriving now would be refused. */
  get full(): boolean {
    return this.inFlight >= Math.floor(this.limit) && this.waiting.length >= this.settings.maxQueued;
  }

  /**
   * A 429 when a call arriving now would be refused (every slot taken, the queue full), else
   * undefined. Checked before the request body is read and validated, so a refusal costs
   * almost nothing when the API is flooded.
   */
  refuseEarly(): HttpError | undefined {
    if (!this.full) return undefined;
    this.refused.queueFull++;
    return this.refusal('too many calls in flight');
  }

  /** Runs `work` in a slot, or throws a 429 HttpError without running it. */
  async run<T>(work: () => Promise<T>): Promise<T> {
    await this.acquire();
    const started = this.now();
    try {
      return await work();
    } finally {
      this.adapt(started);
      this.release();
    }
  }

  /** After a call that started at `started`: a slow one shrinks the limit, a fast one grows it. */
  private adapt(started: number): void {
    const { minInFlight, maxInFlight, targetLatencyMs } = this.settings;
    const at = this.now();
    if (at - started > targetLatencyMs) {
      // Calls admitted before the last cut were slow under the old limit: one cut answers them all.
      if (started < this.lastDecreaseAt) return;
      this.lastDecreaseAt = at;
      this.limit = Math.max(Math.min(minInFlight, maxInFlight), this.limit * 0.75);
    } else {
      this.limit = Math.min(maxInFlight, this.limit + 1 / this.limit);
    }
  }

  private acquire(): Promise<void> | undefined {
    this.tick();
    if (this.inFlight < Math.floor(this.limit)) {
      this.inFlight++;
      this.second.admitted++;
      return undefined;
    }
    if (this.waiting.length >= this.settings.maxQueued) {
      this.refused.queueFull++;
      return Promise.reject(this.refusal('too many calls in flight'));
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        admit: () => {
          clearTimeout(waiter.timer);
          this.second.admitted++;
          resolve();
        },
        timer: setTimeout(() => {
          this.waiting.splice(this.waiting.indexOf(waiter), 1);
          this.refused.waitedTooLong++;
          reject(this.refusal(`no slot free within ${this.settings.maxQueueWaitMs} ms`));
        }, this.settings.maxQueueWaitMs),
      };
      this.waiting.push(waiter);
    });
  }

  private release(): void {
    // The slot passes straight to the oldest waiter while the limit allows; else it is freed.
    if (this.inFlight <= Math.floor(this.limit)) {
      const next = this.waiting.shift();
      if (next) {
        next.admit();
        return;
      }
    }
    this.inFlight--;
  }

  private refusal(why: string): HttpError {
    const retryAfter = this.retryAfterSeconds();
    this.second.refused++;
    return new HttpError(429, `overloaded: ${why}; retry after ${retryAfter} s`, { retryAfter });
  }
}
