/** Counters read from Prometheus `/metrics` endpoints: the API's and the Temporal dev server's. */
import { round } from './stats.js';

/** Every series of `metric` in the Prometheus text at `urls` (each a `/metrics` endpoint): its labels and value. */
async function seriesOf(urls: readonly string[], metric: string): Promise<{ labels: string; value: number }[]> {
  const pattern = new RegExp(`^${metric}\\{([^}]*)\\} (\\S+)$`, 'gm');
  const found: { labels: string; value: number }[] = [];
  for (const url of urls) {
    const text = await (await fetch(url)).text();
    for (const [, labels = '', value = '0'] of text.matchAll(pattern)) found.push({ labels, value: Number(value) });
  }
  return found;
}

/** The value of `label` in a series' label text, if it has one. */
function labelValue(labels: string, label: string): string | undefined {
  return new RegExp(`(?:^|,)${label}="([^"]*)"`).exec(labels)?.[1];
}

/**
 * A counter of Prometheus text at `urls` (each a `/metrics` endpoint), summed over every series
 * and endpoint by the value of one label: e.g. a server's `persistence_requests` by `operation`.
 */
export async function counterBy(urls: readonly string[], metric: string, label: string): Promise<Map<string, number>> {
  const sums = new Map<string, number>();
  for (const { labels, value } of await seriesOf(urls, metric)) {
    const key = labelValue(labels, label);
    if (key !== undefined) sums.set(key, (sums.get(key) ?? 0) + value);
  }
  return sums;
}

/**
 * A counter of Prometheus text at `urls`, summed over the series whose every label in `where`
 * has one of the values given: e.g. the dev server's `service_requests` of the history service
 * for `RespondWorkflowTaskCompleted` (the workflow tasks completed).
 */
export async function counterWhere(
  urls: readonly string[],
  metric: string,
  where: Record<string, readonly string[]>,
): Promise<number> {
  let sum = 0;
  for (const { labels, value } of await seriesOf(urls, metric)) {
    const matches = Object.entries(where).every(([label, values]) => {
      const its = labelValue(labels, label);
      return its !== undefined && values.includes(its);
    });
    if (matches) sum += value;
  }
  return sum;
}

/** Workflow tasks the Temporal server at `metricsUrl` (its `/metrics`) completed since it started, in namespace `default`. */
export function workflowTasksCompleted(metricsUrl: string): Promise<number> {
  return counterWhere([metricsUrl], 'service_requests', {
    service_name: ['history'],
    namespace: ['default'],
    operation: ['RespondWorkflowTaskCompleted'],
  });
}

/** Signals the Temporal server at `metricsUrl` received since it started (signal and signal-with-start), in namespace `default`. */
export function signalsReceived(metricsUrl: string): Promise<number> {
  return counterWhere([metricsUrl], 'service_requests', {
    service_name: ['frontend'],
    namespace: ['default'],
    operation: ['SignalWorkflowExecution', 'SignalWithStartWorkflowExecution'],
  });
}

/** The APIs' admission refusals since they started (`api_admission_refused` of /metrics), by reason, summed. */
export function admissionRefusals(apiUrls: readonly string[]): Promise<Map<string, number>> {
  return counterBy(
    apiUrls.map((url) => `${url}/metrics`),
    'api_admission_refused',
    'reason',
  );
}

/** `CreateWorkflowExecution 1.00, ...`: what a counter grew by between two readings, per item, most first. */
export function perItem(before: Map<string, number>, after: Map<string, number>, items: number): string {
  const grown = [...after]
    .map(([key, value]): [string, number] => [key, (value - (before.get(key) ?? 0)) / Math.max(1, items)])
    .filter(([, value]) => value >= 0.005)
    .sort(([, a], [, b]) => b - a);
  const total = grown.reduce((sum, [, value]) => sum + value, 0);
  return grown.length === 0
    ? 'none read'
    : `${round(total, 2)} in all: ${grown.map(([key, value]) => `${key} ${round(value, 2)}`).join(', ')}`;
}
