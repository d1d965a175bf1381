/**
 * Work started after its request was answered, at most `limit` at once. Past the limit it is not
 * started, never queued: the caller decides what not starting means. `drain()` waits for what
 * runs, so a shutdown finishes it.
 */
export class DeferredWork {
  private readonly running = new Set<Promise<void>>();
  /** Started, and not started because `limit` were running. */
  readonly counts = { started: 0, skipped: 0 };

  constructor(private readonly limit: number) {}

  get inFlight(): number {
    return this.running.size;
  }

  /** Starts `work` (which handles its own failure) unless `limit` run; false when not started. */
  tryStart(work: () => Promise<void>): boolean {
    if (this.running.size >= this.limit) {
      this.counts.skipped++;
      return false;
    }
    this.counts.started++;
    const run = work().finally(() => this.running.delete(run));
    this.running.add(run);
    return true;
  }

  async drain(): Promise<void> {
    await Promise.allSettled([...this.running]);
  }
}
