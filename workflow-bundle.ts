/**
 * How the workflow code is bundled, in one place for the worker, the tests and the benches.
 *
 * The whole of workflows/ is preloaded: evaluated once per worker thread and shared by every
 * cached workflow, instead of once per workflow (about 40 KB of heap each, 400 MB at 10,000
 * workspaces). That is safe because no module there keeps state at module level (eslint
 * refuses a top-level `let` under workflows/): a workflow's state lives in its function's scope,
 * and what a module exports is frozen once shared.
 */
import { fileURLToPath } from 'node:url';

export const workflowsPath = fileURLToPath(new URL('./workflows/index.ts', import.meta.url));

export const preloadModules = [workflowsPath];
