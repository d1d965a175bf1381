/**
 * Rows of `npm run chaos` against the real pieces (PostgreSQL, a dev server, the worker and the
 * API as their own processes): the worker SIGKILLed at each moment of a reconcile (diff, stage,
 * deliver, record, restart) and started again, and PostgreSQL stopped under heartbeat load and
 * started again.
 */
import { describe, it } from 'vitest';
import type { RowName } from '../../chaos/main.js';
import type { Moment } from '../../chaos/rows.js';
import { expectRowsHold } from './rows.js';

/**
 * Two stacks side by side: each worker-kill moment mostly waits out the killed activity's
 * heartbeat timeout or the workflow task's (10 s), so the five moments in a row on one stack took
 * longest of any file. The PostgreSQL row follows on the stack with two moments, after the run's
 * busy start: its refusals must answer fast. Its outage lasts 10 s (the command's 20 s): once the
 * server is down every call meets the same refused connection, so a longer outage checks nothing
 * more. 2 MB plugins keep every moment observable (a stage and a delivery still take tens of
 * milliseconds) at a fifth of the CPU of the command's 20 MB.
 */
const stacks: { name: string; rows: RowName[]; moments: Moment[] }[] = [
  {
    name: "the worker SIGKILLed in a reconcile's stage, deliver and restart: it converges, each revision delivered at most once, one restart",
    rows: ['worker-kill'],
    moments: ['stage', 'deliver', 'restart'],
  },
  {
    name: "the worker SIGKILLed in a reconcile's diff and record, then PostgreSQL stopped under load: refused fast, nothing acknowledged lost",
    rows: ['worker-kill', 'postgres'],
    moments: ['diff', 'record'],
  },
];

describe('faults', () => {
  for (const { name, rows, moments } of stacks)
    it.concurrent(name, { timeout: 10 * 60_000 }, async () => {
      await expectRowsHold(rows, { moments, plugins: 8, pluginMb: 2, outageMs: 10_000 });
    });
});
