import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { StatusSummary } from '../db/tables/workspaces.js';
import type { Store } from '../db/store.js';
import { statuses } from '../workflows/state-machine.js';
import type { FleetLivenessState, Verdict } from '../workflows/definitions.js';
import type { Admission } from './admission.js';

/** Why a register's boot credential was refused (api/tokens.ts). */
export type BootCredentialRefusal = 'wrong_or_used' | 'live_token_exists' | 'lost_race';
const bootCredentialRefusals: readonly BootCredentialRefusal[] = ['wrong_or_used', 'live_token_exists', 'lost_race'];
const verdicts: readonly Verdict[] = ['alive', 'queued', 'dead', 'restarting'];
const streamCuts = ['slow', 'closing', 'error'] as const;

/** How long one read of the fleet serves scrapes: Prometheus scrapes every 15-60 s, several may scrape. */
export const FLEET_CACHE_MS = 10_000;

/**
 * The API's metrics (docs/metrics.md): request counts and latencies per route, admission, the
 * fleet's gauges (read from the database at scrape time, cached briefly), the domain events the
 * API sees (boot-credential refusals, dead-detection verdicts and strikes), the event streams,
 * and the process's default metrics. Every labelled counter starts at 0 for each value.
 */
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

  private readonly bootCredentialRefusals = new Counter({
    name: 'api_boot_credential_refusals_total',
    help: 'Registers refused for their boot credential: wrong or used already, the workspace has a live token, or another register with it minted first',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private readonly verdicts = new Counter({
    name: 'workspace_dispatch_verdicts_total',
    help: 'Dead-detection verdicts answered to callers that could not reach a box (POST /workspaces/:id/dispatch-failed), by verdict',
    labelNames: ['verdict'] as const,
    registers: [this.registry],
  });
  private readonly strikes = new Counter({
    name: 'workspace_strikes_total',
    help: 'Strikes: not-running probes of a settling box with no heartbeat, as dispatch-failed verdicts report them',
    registers: [this.registry],
  });
  private readonly streamsOpen = new Gauge({
    name: 'api_event_streams',
    help: 'GET /events streams open',
    registers: [this.registry],
  });
  private readonly streamsCut = new Counter({
    name: 'api_event_streams_cut_total',
    help: 'GET /events streams the API ended: the client took nothing for too long (slow), the API closed, or an error',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    for (const reason of bootCredentialRefusals) this.bootCredentialRefusals.inc({ reason }, 0);
    for (const verdict of verdicts) this.verdicts.inc({ verdict }, 0);
    for (const reason of streamCuts) this.streamsCut.inc({ reason }, 0);
  }

  bootCredentialRefused(reason: BootCredentialRefusal): void {
    this.bootCredentialRefusals.inc({ reason });
  }

  /** A verdict answered; `strikes` is set when the evaluation struck the box. */
  dispatchVerdict(verdict: Verdict, strikes: number | undefined): void {
    this.verdicts.inc({ verdict });
    if (strikes !== undefined) this.strikes.inc();
  }

  eventStreamOpened(): void {
    this.streamsOpen.inc();
  }

  eventStreamClosed(cut: (typeof streamCuts)[number] | null): void {
    this.streamsOpen.dec();
    if (cut !== null) this.streamsCut.inc({ reason: cut });
  }

  /**
   * The fleet's gauges, from one aggregate query (WorkspacesTable.byStatus) shared by the scrapes of
   * FLEET_CACHE_MS: workspaces per status, and per status the age of its oldest last heartbeat.
   * A read that fails leaves the gauges empty (no stale values) and counts the failure.
   *
   * From the same read: live workspaces cordoned, and crash-looping (ops/prometheus/rules.yml
   * alerts on the latter).
   */
  watchFleet(store: Store): void {
    let cached: { at: number; read: Promise<StatusSummary[] | null> } | undefined;
    const failures = new Counter({
      name: 'api_fleet_read_failures_total',
      help: "Scrapes whose read of the fleet's gauges from the database failed (those gauges were left empty)",
      registers: [this.registry],
    });
    const read = (): Promise<StatusSummary[] | null> => {
      const now = Date.now();
      if (cached === undefined || now - cached.at >= FLEET_CACHE_MS) {
        cached = {
          at: now,
          read: store.workspaces.byStatus().catch(() => {
            failures.inc();
            cached = undefined;
            return null;
          }),
        };
      }
      return cached.read;
    };
    const live = statuses.filter((status) => status !== 'removed');
    for (const [name, help, count] of [
      [
        'workspaces_cordoned',
        'Live workspaces an operator holds: nothing automatic restarts or delivers to them',
        (row: StatusSummary) => row.cordoned,
      ],
      [
        'workspaces_crash_looping',
        'Live workspaces whose runtime crashed twice or more in a row: automatic restarts back off',
        (row: StatusSummary) => row.crashLooping,
      ],
    ] as const)
      new Gauge({
        name,
        help,
        registers: [this.registry],
        async collect() {
          this.reset();
          const fleet = await read();
          if (fleet !== null) this.set(fleet.reduce((sum, row) => sum + count(row), 0));
        },
      });
    new Gauge({
      name: 'workspaces',
      help: 'Live workspaces by status (the projection; removed ones are not counted)',
      labelNames: ['status'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        const fleet = await read();
        if (fleet === null) return;
        for (const status of live) this.set({ status }, fleet.find((row) => row.status === status)?.workspaces ?? 0);
      },
    });
    new Gauge({
      name: 'workspace_oldest_heartbeat_age_seconds',
      help: 'Per status, seconds since the last heartbeat of its most silent workspace (the heartbeat ledger)',
      labelNames: ['status'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        const fleet = await read();
        for (const row of fleet ?? [])
          if (row.oldestHeartbeatAgeSeconds !== null) this.set({ status: row.status }, row.oldestHeartbeatAgeSeconds);
      },
    });
  }

  /**
   * The fleet liveness controller's judgement, from its state query shared by the scrapes of
   * FLEET_CACHE_MS: `workspace_fleet_disruption` (1 while the controller suspects the observer and
   * signals nobody) and `workspace_remediation_paused` (1 while an operator holds remediation). A
   * query that fails (Temporal down, no controller) leaves both empty, not stale.
   */
  watchController(readState: () => Promise<FleetLivenessState>): void {
    let cached: { at: number; read: Promise<FleetLivenessState | null> } | undefined;
    const read = (): Promise<FleetLivenessState | null> => {
      const now = Date.now();
      if (cached === undefined || now - cached.at >= FLEET_CACHE_MS)
        cached = { at: now, read: readState().catch(() => ((cached = undefined), null)) };
      return cached.read;
    };
    new Gauge({
      name: 'workspace_fleet_disruption',
      help: 'Whether the fleet liveness controller judges a disruption (a share of the fleet silent at once, or no API serving): 1, and nobody is declared silent',
      registers: [this.registry],
      async collect() {
        this.reset();
        const state = await read();
        if (state !== null) this.set(state.disruption === null ? 0 : 1);
      },
    });
    new Gauge({
      name: 'workspace_remediation_paused',
      help: "Whether an operator paused the fleet liveness controller's remediation (POST /fleet/pause): 1, and nobody is declared silent",
      registers: [this.registry],
      async collect() {
        this.reset();
        const state = await read();
        if (state !== null) this.set(state.paused === null ? 0 : 1);
      },
    });
  }

  /** The admission limiters' load and refusals, by pool (call slots, relay slots), read at scrape time. */
  watchAdmission(pools: Record<'calls' | 'relays', Admission>): void {
    const each = (read: (admission: Admission) => number) =>
      function (this: Gauge<'pool'>): void {
        for (const [pool, admission] of Object.entries(pools)) this.set({ pool }, read(admission));
      };
    new Gauge({
      name: 'api_admission_in_flight',
      help: 'Calls holding an admission slot, by pool (calls, relays)',
      labelNames: ['pool'] as const,
      registers: [this.registry],
      collect: each((admission) => admission.load.inFlight),
    });
    new Gauge({
      name: 'api_admission_limit',
      help: 'Calls the admission limit lets in at once now (it adapts to latency), by pool',
      labelNames: ['pool'] as const,
      registers: [this.registry],
      collect: each((admission) => admission.load.limit),
    });
    new Gauge({
      name: 'api_admission_queued',
      help: 'Calls waiting for an admission slot, by pool',
      labelNames: ['pool'] as const,
      registers: [this.registry],
      collect: each((admission) => admission.load.queued),
    });
    new Gauge({
      name: 'api_admission_refused',
      help: 'Calls refused with 429 since start, by pool and reason',
      labelNames: ['pool', 'reason'] as const,
      registers: [this.registry],
      collect() {
        for (const [pool, admission] of Object.entries(pools)) {
          this.set({ pool, reason: 'queue_full' }, admission.refused.queueFull);
          this.set({ pool, reason: 'waited_too_long' }, admission.refused.waitedTooLong);
        }
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
