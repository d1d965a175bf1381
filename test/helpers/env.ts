import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { existingPath, temporalCliPath, testServerPath } from '../../scripts/toolchain.js';

let runtimeInstalled = false;

/** Workers log warnings and errors only, so test output stays readable. Must precede any connection. */
export function installQuietRuntime(): void {
  if (runtimeInstalled) return;
  Runtime.install({ logger: new DefaultLogger('WARN') });
  runtimeInstalled = true;
}

/** The Java time-skipping test server: 30 s windows pass in milliseconds. */
export function createTimeSkippingEnv(): Promise<TestWorkflowEnvironment> {
  installQuietRuntime();
  const server = existingPath(testServerPath());
  return TestWorkflowEnvironment.createTimeSkipping(server ? { server } : undefined);
}

/** A real dev server (Temporal CLI), for what the test server does not implement. */
export function createLocalEnv(): Promise<TestWorkflowEnvironment> {
  installQuietRuntime();
  const server = existingPath(temporalCliPath());
  return TestWorkflowEnvironment.createLocal(server ? { server } : undefined);
}
