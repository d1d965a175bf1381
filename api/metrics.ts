import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Admission } from './admission.js';

/** Request counts and latencies per route, plus the process's default metrics. */
export class Metrics {
  private readonly registry = new Registry();
  private readonly requests = new Counter({
    name: 'http_requests_total',
    help: 'HTTP requests by method, route and status code',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  });
  private readonly latency = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP request latency by method and route',
    labelNames: ['method', 'route'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  /** The admission limiter's load and refusals, read at scrape time. */
  watchAdmission(admission: Admission): void {
    new Gauge({
      name: 'api_admission_in_flight',
      help: 'Calls holding an admission slot',
      registers: [this.registry],
      collect() {
        this.set(admission.load.inFlight);
      },
    });
    new Gauge({
      name: 'api_admission_limit',
      help: 'Calls the admission limit lets in at once now (it adapts to latency)',
      registers: [this.registry],
      collect() {
        this.set(admission.load.limit);
      },
    });
    new Gauge({
      name: 'api_admission_queued',
      help: 'Calls waiting for an admission slot',
      registers: [this.registry],
      collect() {
        this.set(admission.load.queued);
      },
    });
    new Gauge({
      name: 'api_admission_refused',
      help: 'Calls refused with 429 since start, by reason',
      labelNames: ['reason'] as const,
      registers: [this.registry],
      collect() {
        this.set({ reason: 'queue_full' }, admission.refused.queueFull);
        this.set({ reason: 'waited_too_long' }, admission.refused.waitedTooLong);
      },
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  observe(method: string, route: string, status: number, seconds: number): void {
    this.requests.inc({ method, route, status: String(status) });
    this.latency.observe({ method, route }, seconds);
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }
}
