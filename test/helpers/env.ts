import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { ensureSearchAttributes } from '../../connection.js';
import { devServerEnvOptions, existingPath, testServerPath } from '../../scripts/toolchain.js';

let runtimeInstalled = false;

/** Workers log warnings and errors only, so test output stays readable. Must precede any connection. */
export function installQuietRuntime(): void {
  if (runtimeInstalled) return;
  Runtime.install({ logger: new DefaultLogger('WARN') });
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
