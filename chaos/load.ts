/**
 * Runtimes as the API sees them, many at once: an open-loop heartbeat load at a fixed rate over
 * a set of workspaces (each call with its workspace's token), recording every answer, so a row
 * can count what was acknowledged (200) and compare it with what the workflows recorded.
 * Bounded: at most `maxOutstanding` calls in flight; past that the generator skips (and counts)
 * rather than queue without end on its own side.
 */
import { Agent, request } from 'node:http';
import { idleHeartbeat } from '../workflows/payloads.js';

export interface Runtime {
  id: string;
  token: string;
}

export interface Answer {
  workspaceId: string;
  /** HTTP status; 0 for a network error (refused connection, reset, timeout). */
  status: number;
  ms: number;
  /** When it was sent, in ms since the load started. */
  at: number;
  /** A 503 whose body says the signal may have been delivered. */
  deliveryUnknown: boolean;
}

const agent = new Agent({ keepAlive: true, maxSockets: 512 });
const TIMEOUT_MS = 15_000;

/**
 * One JSON call to the API; resolves with its status (0 on a network error), parsed body and
 * Retry-After in seconds (undefined when absent).
 */
export function call(
  url: string,
  method: string,
  body: unknown,
  bearer?: string,
): Promise<{ status: number; body: unknown; ms: number; retryAfter?: number }> {
  const started = performance.now();
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
            ms: performance.now() - started,
            ...(Number.isFinite(retryAfter) && res.headers['retry-after'] !== undefined ? { retryAfter } : {}),
          });
        });
        res.on('error', () => resolve({ status: 0, body: null, ms: performance.now() - started }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ status: 0, body: null, ms: performance.now() - started }));
    req.end(payload);
  });
}

export class HeartbeatLoad {
  readonly answers: Answer[] = [];
  /** Calls the generator did not send because `maxOutstanding` were already in flight. */
  skipped = 0;
  private outstanding = 0;
  private sent = 0;
  private timer: NodeJS.Timeout | undefined;
  private startedAt = 0;
  private next = 0;
  /** The schedule counts from the last rate change: when, and how many were sent before it. */
  private rateSince = 0;
  private sentBefore = 0;
  private readonly drained: (() => void)[] = [];

  constructor(
    private readonly apiUrl: string,
    private readonly runtimes: Runtime[],
    private rate: number,
    private readonly maxOutstanding = 2_000,
  ) {}

  /** Milliseconds since the load started. */
  now(): number {
    return performance.now() - this.startedAt;
  }

  start(): void {
    this.startedAt = performance.now();
    this.timer = setInterval(() => {
      const due = Math.floor(((this.now() - this.rateSince) / 1000) * this.rate) - (this.sent - this.sentBefore);
      for (let i = 0; i < due; i++) {
        if (this.outstanding >= this.maxOutstanding) {
          this.skipped++;
          this.sent++;
        } else {
          this.fire();
        }
      }
    }, 5);
  }

  /** Changes the offered rate from now on. */
  setRate(rate: number): void {
    this.rateSince = this.now();
    this.sentBefore = this.sent;
    this.rate = rate;
  }

  /** Stops sending and waits for every call in flight to be answered. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    if (this.outstanding > 0) await new Promise<void>((resolve) => this.drained.push(resolve));
  }

  private fire(): void {
    const runtime = this.runtimes[this.next++ % this.runtimes.length];
    if (runtime === undefined) return;
    this.sent++;
    this.outstanding++;
    const at = this.now();
    void call(`${this.apiUrl}/registry/heartbeat`, 'POST', idleHeartbeat(runtime.id, 60), runtime.token).then(
      ({ status, body, ms }) => {
        const deliveryUnknown = (body as { delivery?: unknown } | null)?.delivery === 'unknown';
        this.answers.push({ workspaceId: runtime.id, status, ms, at, deliveryUnknown });
        this.outstanding--;
        if (this.outstanding === 0) this.drained.splice(0).forEach((resolve) => resolve());
      },
    );
  }

  /** Acknowledged (200) heartbeats per workspace. */
  acked(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const answer of this.answers)
      if (answer.status === 200) counts.set(answer.workspaceId, (counts.get(answer.workspaceId) ?? 0) + 1);
    return counts;
  }

  /** Answers sent within [from, to) ms of the start. */
  between(from: number, to: number): Answer[] {
    return this.answers.filter((answer) => answer.at >= from && answer.at < to);
  }
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** "200: 812, 503: 40, net: 3" */
export function byStatus(answers: Answer[]): string {
  const counts = new Map<number, number>();
  for (const answer of answers) counts.set(answer.status, (counts.get(answer.status) ?? 0) + 1);
  return [...counts.entries()]
    .sort(([a], [b]) => a - b)
    .map(([status, n]) => `${status === 0 ? 'net' : status}: ${n}`)
    .join(', ');
}

/**
 * A counter of Prometheus text at `urls` (each a `/metrics` endpoint), summed over every series
 * and endpoint by the value of one label: e.g. a server's `persistence_requests` by `operation`.
 */
export async function counterBy(urls: readonly string[], metric: string, label: string): Promise<Map<string, number>> {
  const sums = new Map<string, number>();
  const series = new RegExp(`^${metric}\\{([^}]*)\\} (\\S+)$`, 'gm');
  const labelValue = new RegExp(`(?:^|,)${label}="([^"]*)"`);
  for (const url of urls) {
    const text = await (await fetch(url)).text();
    for (const [, labels = '', value = '0'] of text.matchAll(series)) {
      const key = labelValue.exec(labels)?.[1];
      if (key !== undefined) sums.set(key, (sums.get(key) ?? 0) + Number(value));
    }
  }
  return sums;
}

/** The APIs' admission refusals since they started (`api_admission_refused` of /metrics), by reason, summed. */
export function admissionRefusals(urls: readonly string[]): Promise<Map<string, number>> {
  return counterBy(
    urls.map((url) => `${url}/metrics`),
    'api_admission_refused',
    'reason',
  );
}

/** Refusals by reason, the difference `after - before` when `before` is given, as `reason: n, ...`. */
export function refusedText(after: Map<string, number>, before?: Map<string, number>): string {
  return (
    [...after]
      .map(([k, v]): [string, number] => [k, v - (before?.get(k) ?? 0)])
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}: ${v}`)
      .join(', ') || 'none'
  );
}
