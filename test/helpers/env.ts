import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, type Logger } from '@temporalio/worker';
import { ensureSearchAttributes } from '../../connection.js';
import { devServerEnvOptions, existingPath, testServerPath } from '../../scripts/toolchain.js';

let runtimeInstalled = false;

/**
 * Workers log warnings and errors only, so test output stays readable, or to `logger` (a test
 * that reads the log lines). Must precede any connection; the first call decides.
 */
export function installQuietRuntime(logger: Logger = new DefaultLogger('WARN')): void {
  if (runtimeInstalled) return;
  Runtime.install({ logger });
  runtimeInstalled = true;
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
