import { bundleWorkflowCode } from '@temporalio/worker';
import { preloadModules, workflowInterceptorModules, workflowsPath } from '../../workflow-bundle.js';

export async function bundleWorkflows(): Promise<string> {
  const { code } = await bundleWorkflowCode({
    workflowsPath,
    workflowInterceptorModules,
    preloadModules,
    logger: quietLogger,
  });
  return code;
}

const noop = (): void => undefined;
const quietLogger = { trace: noop, debug: noop, info: noop, warn: noop, error: noop, log: noop };
