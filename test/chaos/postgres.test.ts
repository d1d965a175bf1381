/**
 * PostgreSQL stopped under heartbeat load and started again, against the real pieces (a dev
 * server, the worker and the API as their own processes). `npm run chaos` runs this row with the
 * rest. The outage lasts 10 s here (20 s there): once the server is down every call meets the
 * same refused connection, so a longer outage checks nothing more.
 */
import { describe, it } from 'vitest';
import { expectRowsHold } from './rows.js';

describe('faults', () => {
  it(
    'PostgreSQL stopped under load: refused fast, nothing acknowledged lost, back within seconds',
    async () => {
      await expectRowsHold(['postgres'], { outageMs: 10_000 });
    },
    5 * 60_000,
  );
});
