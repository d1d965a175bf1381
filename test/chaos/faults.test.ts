/**
 * The fault-injection rows that fit in CI, run against the real pieces (PostgreSQL, a dev
 * server, the worker and the API as their own processes): PostgreSQL stopped for 20 s under
 * load, and the worker SIGKILLed at each moment of a reconcile. `npm run chaos` runs these and
 * the rest (dev-server restart, API restart, overload).
 */
import { describe, expect, it } from 'vitest';
import { runChaos, table } from '../../chaos/main.js';
import { moments } from '../../chaos/rows.js';

describe('faults', () => {
  it(
    'PostgreSQL restart and worker SIGKILLs during a reconcile: every row holds',
    async () => {
      const lines: string[] = [];
      const rows = await runChaos({
        rows: ['postgres', 'worker-kill'],
        moments: [...moments],
        plugins: 8,
        pluginMb: 10,
        outageMs: 20_000,
        floodRate: 1_000,
        floodSeconds: 30,
        keep: false,
        log: (line) => lines.push(line),
      });
      console.log(`${lines.join('\n')}\n\n${table(rows)}`);
      expect(rows).toHaveLength(1 + moments.length);
      for (const row of rows) expect(row.held, `${row.fault}: ${row.figures}`).toBe(true);
    },
    15 * 60_000,
  );
});
