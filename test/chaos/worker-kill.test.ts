/**
 * The worker SIGKILLed at each moment of a reconcile (diff, stage, deliver, record, restart) and
 * started again, against the real pieces (PostgreSQL, a dev server, the worker and the API as
 * their own processes). `npm run chaos` runs these rows with the rest.
 */
import { describe, it } from 'vitest';
import { moments } from '../../chaos/rows.js';
import { expectRowsHold } from './rows.js';

describe('faults', () => {
  it(
    'worker SIGKILLs during a reconcile: it converges, each revision delivered at most once, one restart',
    async () => {
      await expectRowsHold(['worker-kill'], { moments: [...moments], plugins: 8, pluginMb: 10 });
    },
    10 * 60_000,
  );
});
