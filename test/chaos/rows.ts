/**
 * Runs fault-injection rows (chaos/) as a test: the rows share one stack, whose workers load the
 * workflow bundle the test run built once; every row must hold, and the run's log and table are
 * printed either way.
 */
import { expect, inject } from 'vitest';
import { defaultRowSettings, runChaos, table, type ChaosOptions } from '../../chaos/main.js';

type RowSettings = Omit<ChaosOptions, 'rows' | 'keep' | 'log' | 'workflowBundle'>;

export async function expectRowsHold(rows: ChaosOptions['rows'], settings: Partial<RowSettings>): Promise<void> {
  const options: RowSettings = { ...defaultRowSettings, ...settings };
  const lines: string[] = [];
  const started = Date.now();
  const results = await runChaos({
    ...options,
    rows,
    keep: false,
    workflowBundle: inject('workflowBundlePath'),
    log: (line) => lines.push(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${line}`),
  });
  console.log(`${lines.join('\n')}\n\n${table(results)}`);
  expect(results).toHaveLength(rows.reduce((n, row) => n + (row === 'worker-kill' ? options.moments.length : 1), 0));
  for (const row of results) expect(row.held, `${row.fault}: ${row.figures}`).toBe(true);
}
