import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, type LogEntry } from '@temporalio/worker';
import { ensureSearchAttributes } from '../../connection.js';
import { devServerEnvOptions, existingPath, testServerPath } from '../../scripts/toolchain.js';

let runtimeInstalled = false;
const logSinks = new Set<(entry: LogEntry) => void>();
const printed = new DefaultLogger('WARN');

/**
 * Workers print warnings and errors only, so test output stays readable; a test that reads log
 * lines adds a sink with `captureWorkerLogs`. The runtime is installed once per process and test
 * files share their process, so no file may install a logger of its own. Must precede any
 * connection.
 */
export function installQuietRuntime(): void {
  if (runtimeInstalled) return;
  const logger = new DefaultLogger('INFO', (entry) => {
    for (const sink of logSinks) sink(entry);
    if (entry.level === 'WARN' || entry.level === 'ERROR') printed.log(entry.level, entry.message, entry.meta);
  });
  Runtime.install({ logger });
  runtimeInstalled = true;
}

/** Gives every worker log line from INFO up to `sink` until the returned function is called. */
export function captureWorkerLogs(sink: (entry: LogEntry) => void): () => void {
  installQuietRuntime();
  logSinks.add(sink);
  return () => logSinks.delete(sink);
}

/** The Java time-skipping test server: 30 s windows pass in milliseconds. */
export async function createTimeSkippingEnv(): Promise<TestWorkflowEnvironment> {
  installQuietRuntime();
  const server = existingPath(testServerPath());
  const env = await TestWorkflowEnvironment.createTimeSkipping(server ? { server } : undefined);
  await ensureSearchAttributes(env.connection.operatorService, env.namespace ?? 'default');
  return env;
}

/** A real dev server (Temporal CLI), for what the test server does not implement. */
export function createLocalEnv(): Promise<TestWorkflowEnvironment> {
  installQuietRuntime();
  return TestWorkflowEnvironment.createLocal(devServerEnvOptions());
}
