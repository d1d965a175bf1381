/**
 * Admission control: the API serves at most `maxInFlight` calls that reach Temporal or the
 * database at once, lets at most `maxQueued` more wait briefly for a slot, and refuses the rest
 * at once with 429 and Retry-After. Past what the system can serve, a queue only adds latency
 * to every call and memory to the process; refusing the excess keeps the accepted calls fast
 * and tells the caller when to come back.
 */
import { HttpError } from './errors.js';

export interface AdmissionSettings {
  /** Calls served at once. */
  maxInFlight: number;
  /** Calls that may wait for a slot; one more is refused at once. */
  maxQueued: number;
  /** A call that waited this long for a slot is refused. */
  maxQueueWaitMs: number;
  /** What a refusal's Retry-After says, in seconds. */
  retryAfterSeconds: number;
}

/**
 * Measured on one 2-core box running everything (dev server, worker, API, PostgreSQL): past
 * about 32 calls in flight the throughput no longer grows, only the latency does.
 */
export const defaultAdmissionSettings: AdmissionSettings = {
  maxInFlight: 32,
  maxQueued: 8,
  maxQueueWaitMs: 50,
  retryAfterSeconds: 1,
};

interface Waiter {
  admit: () => void;
  timer: NodeJS.Timeout;
}

export class Admission {
  private inFlight = 0;
  private readonly waiting: Waiter[] = [];
  /** Refusals since start, by why: the queue was full, or the wait for a slot ran out. */
  readonly refused = { queueFull: 0, waitedTooLong: 0 };

  constructor(private readonly settings: AdmissionSettings) {}

  get load(): { inFlight: number; queued: number } {
    return { inFlight: this.inFlight, queued: this.waiting.length };
  }

  /**
   * A 429 when a call arriving now would be refused (every slot taken, the queue full), else
   * undefined. Checked before the request body is read and validated, so a refusal costs
   * almost nothing when the API is flooded.
   */
  refuseEarly(): HttpError | undefined {
    if (this.inFlight < this.settings.maxInFlight || this.waiting.length < this.settings.maxQueued) return undefined;
    this.refused.queueFull++;
    return this.refusal('too many calls in flight');
  }

  /** Runs `work` in a slot, or throws a 429 HttpError without running it. */
  async run<T>(work: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await work();
    } finally {
      this.release();
    }
  }

  private acquire(): Promise<void> | undefined {
    if (this.inFlight < this.settings.maxInFlight) {
      this.inFlight++;
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
    const next = this.waiting.shift();
    // The slot passes straight to the oldest waiter; inFlight stays the same.
    if (next) next.admit();
    else this.inFlight--;
  }

  private refusal(why: string): HttpError {
    return new HttpError(429, `overloaded: ${why}; retry after ${this.settings.retryAfterSeconds} s`, {
      retryAfter: this.settings.retryAfterSeconds,
    });
  }
}
