/** Counters read from Prometheus `/metrics` endpoints: the API's and the Temporal dev server's. */
import { round } from './stats.js';

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
