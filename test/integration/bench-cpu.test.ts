/** bench/harness/processes.ts: the CPU of a process tree whose children come and go, as PostgreSQL's backends do. */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { cpuBetween, cpuTicks, processTree } from '../../bench/harness/processes.js';

describe('cpuTicks', () => {
  it('keeps the CPU of a child that ended between two readings: a tree never uses less than before', async () => {
    // A parent that starts one busy child and waits for it: the child's CPU then moves to the parent.
    const busy = 'i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done';
    const parent = spawn('/bin/sh', ['-c', `read _; ${busy} & wait; exec sleep 30`], {
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    const tick = () => new Promise((resolve) => setTimeout(resolve, 20));
    try {
      const root = parent.pid ?? 0;
      const tree = () => [{ name: 'tree', pids: processTree(root) }];
      parent.stdin.write('\n');
      // One reading while the child is busy and listed, one once it has ended.
      let before = cpuTicks(tree());
      while (processTree(root).length < 2 || (before.get('tree') ?? 0) < 5) {
        await tick();
        before = cpuTicks(tree());
      }
      while (processTree(root).length > 1) await tick();
      const [use] = cpuBetween(before, cpuTicks(tree()));
      expect(use?.seconds).toBeGreaterThanOrEqual(0);
    } finally {
      parent.kill('SIGKILL');
      await once(parent, 'exit');
    }
  });
});
