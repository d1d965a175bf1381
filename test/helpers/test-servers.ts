/**
 * Test servers a test process keeps for its whole life, stopped by the run's teardown: vitest ends
 * its test processes without stopping the servers they started, so a server kept past its file
 * would outlive the run. Without the SDK, so the run's main process can stop them.
 */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { procStat } from '../../bench/harness/processes.js';

const SERVER_CLASS = 'io.temporal.testserver.TestServer';

/** Writes the pid of this process's test server on `address` into `runDir`, the run's folder. */
export function recordServer(address: string, runDir: string): void {
  const port = address.split(':').at(-1) ?? '';
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    if (procStat(Number(pid))?.ppid !== process.pid) continue;
    try {
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
      if (args.includes(SERVER_CLASS) && args.at(-1) === port)
        writeFileSync(join(runDir, `test-server-${pid}`), `${pid}\n`);
    } catch {
      // The process ended while it was read.
    }
  }
}

/**
 * Stops every test server recorded in `runDir` that still runs; a pid another process has taken
 * since is left alone.
 */
export function stopRecordedServers(runDir: string): void {
  for (const name of readdirSync(runDir).filter((file) => file.startsWith('test-server-'))) {
    try {
      const pid = Number(readFileSync(join(runDir, name), 'utf8'));
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(SERVER_CLASS)) process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}
