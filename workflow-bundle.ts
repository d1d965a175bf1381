/**
 * How the workflow code is bundled, in one place for the worker, the tests and the benches.
 *
 * The whole of workflows/ is preloaded: evaluated once per worker thread and shared by every
 * cached workflow, instead of once per workflow, which costs heap in proportion to the fleet
 * (docs/performance.md). That is safe because no module there keeps state at module level (eslint
 * refuses a top-level `let` under workflows/): a workflow's state lives in its function's scope,
 * and what a module exports is frozen once shared.
 */
import { bundleWorkflowCode } from '@temporalio/worker';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { projectPath } from './project.js';

export const workflowsPath = projectPath('workflows', 'index.ts');

/** The workflow interceptors: a caller's trace carried to the activities it causes, and log attributes. */
export const workflowInterceptorModules = [projectPath('workflows', 'tracing.ts')];

export const preloadModules = [workflowsPath, ...workflowInterceptorModules];

/**
 * The bundle, built in a child process. The bundler's heap, and what the allocator keeps after
 * it, stay in the process that ran it; the worker holds the fleet's cached workflows and should
 * not carry that too.
 */
export function bundleInChildProcess(): Promise<{ code: string }> {
  return new Promise((resolve, reject) => {
    // From source, under tsx, whatever loader the caller has (the test runner's global setup has
    // none); compiled (dist/), on plain Node.
    const self = fileURLToPath(import.meta.url);
    const child = fork(self, [], {
      execArgv: self.endsWith('.ts') ? ['--import', 'tsx'] : [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let code: string | undefined;
    child.once('message', (message) => {
      if (typeof message === 'string') code = message;
    });
    child.once('error', reject);
    child.once('exit', (exitCode, signal) => {
      if (code !== undefined) resolve({ code });
      else
        reject(new Error(`bundling the workflows failed (${signal ?? `exit code ${exitCode}`}); its output is above`));
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { code } = await bundleWorkflowCode({ workflowsPath, workflowInterceptorModules, preloadModules });
  process.send?.(code, () => process.disconnect());
}
