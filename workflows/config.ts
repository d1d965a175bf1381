/**
 * Lifecycle durations and thresholds. Defaults are the reference system's constants
 * (liveness, health thresholds, dead detection). The resolved config travels in the workflow input and is
 * carried across continue-as-new, so a running workspace never changes its rules mid-run
 * because a worker was redeployed with new defaults.
 */
export interface LifecycleConfig {
  /** Heartbeat silence after which an online or degraded workspace goes offline (reference 180 s). */
  livenessTtlMs: number;
  /** A workspace still provisioning after this long becomes failed (reference 12 min). */
  provisioningTimeoutMs: number;
  /** error_rate at or above this degrades an online workspace (reference 0.5). */
  degradeErrorRate: number;
  /** error_rate must fall below this for a degraded workspace to recover (reference 0.1). */
  recoverErrorRate: number;
  /** Continue as new once this run has received this many signals (server refuses past 10,000). */
  maxSignalsPerRun: number;
  /** Continue as new once this run's history has this many events (server hard limit 50,000). */
  maxEventsPerRun: number;
  /** After a restart starts, a lone not-running probe is not trusted for this long (reference 30 s). */
  settleWindowMs: number;
  /** A heartbeat this recent means the runtime is alive whatever a probe says (reference 15 s). */
  recentHeartbeatMs: number;
  /** While settling, how long to wait for a heartbeat newer than the restart (reference 2 s). */
  freshHeartbeatWaitMs: number;
  /** Delay before re-probing a box that looked not running (reference 500 ms). */
  reprobeDelayMs: number;
  /** Strikes within the strike window that declare a settling box dead (reference 2 in 30 s). */
  strikeThreshold: number;
  strikeWindowMs: number;
  /**
   * Every this long, a live workspace's tracked plugins are verified against its box (a
   * controller's resync; a heartbeat never costs one). 0: never.
   */
  resyncPeriodMs: number;
  /**
   * A runtime that dies (declared dead, or silent past the watchdog) sooner than this after its
   * last restart crashed; one online this long has a healthy stretch behind it and its crash count
   * is reset.
   */
  healthyStretchMs: number;
  /** From the second crash in a row, the next automatic restart waits this long, doubling per crash. */
  crashBackoffBaseMs: number;
  /** The longest crash-loop backoff. */
  crashBackoffMaxMs: number;
  /**
   * A restart that only loads plugins waits while the last heartbeat reports active tasks, at most
   * this long after it was asked.
   */
  drainTimeoutMs: number;
}

export const defaultLifecycleConfig: LifecycleConfig = {
  livenessTtlMs: 180_000,
  provisioningTimeoutMs: 12 * 60_000,
  degradeErrorRate: 0.5,
  recoverErrorRate: 0.1,
  maxSignalsPerRun: 2_000,
  maxEventsPerRun: 10_000,
  settleWindowMs: 30_000,
  recentHeartbeatMs: 15_000,
  freshHeartbeatWaitMs: 2_000,
  reprobeDelayMs: 500,
  strikeThreshold: 2,
  strikeWindowMs: 30_000,
  resyncPeriodMs: 6 * 60 * 60_000,
  healthyStretchMs: 10 * 60_000,
  crashBackoffBaseMs: 10_000,
  crashBackoffMaxMs: 5 * 60_000,
  drainTimeoutMs: 10 * 60_000,
};

/** The shortest periodic resync an operator may set (a resync is a listing of the box). */
export const MIN_RESYNC_PERIOD_MS = 60_000;

export function resolveConfig(overrides: Partial<LifecycleConfig> | undefined): LifecycleConfig {
  return { ...defaultLifecycleConfig, ...overrides };
}

/**
 * Overrides of the defaults by name, as JSON (`WL_LIFECYCLE_CONFIG`, e.g.
 * `{"livenessTtlMs": 60000}`), for workflows started from now on. Throws, naming the key, for
 * an unknown key or a value that is not a positive number.
 */
export function parseLifecycleOverrides(text: string): Partial<LifecycleConfig> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`lifecycle overrides are not valid JSON (${(err as Error).message}): ${text}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new Error(`lifecycle overrides must be a JSON object of durations and thresholds, got ${text}`);
  const overrides: Partial<LifecycleConfig> = {};
  for (const [key, value] of Object.entries(parsed)) {
    if (!(key in defaultLifecycleConfig))
      throw new Error(`unknown lifecycle setting ${key} (known: ${Object.keys(defaultLifecycleConfig).join(', ')})`);
    if (typeof value !== 'number' || !Number.isFinite(value))
      throw new Error(`lifecycle setting ${key} must be a number, got ${JSON.stringify(value)}`);
    // The resync may be switched off (0), never made a busy timer; the rest must be positive.
    if (key === 'resyncPeriodMs' && value !== 0 && value < MIN_RESYNC_PERIOD_MS)
      throw new Error(
        `lifecycle setting resyncPeriodMs must be 0 (off) or at least ${MIN_RESYNC_PERIOD_MS}, got ${value}`,
      );
    if (key !== 'resyncPeriodMs' && value <= 0)
      throw new Error(`lifecycle setting ${key} must be a positive number, got ${value}`);
    overrides[key as keyof LifecycleConfig] = value;
  }
  return overrides;
}
