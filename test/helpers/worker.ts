import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { inject } from 'vitest';
import type { Activities } from '../../activities/index.js';
import { stateQuery } from '../../workflows/definitions.js';
import type { WorkspaceState } from '../../workflows/state-machine.js';

/** A real worker on a fresh task queue, running the real workflow with the given activities. */
export async function createWorker(env: TestWorkflowEnvironment, taskQueue: string, acts: Activities): Promise<Worker> {
  return Worker.create({
    connection: env.nativeConnection,
    taskQueue,
    workflowBundle: { codePath: inject('workflowBundlePath') },
    activities: acts,
  });
}

/** Polls the state query until the predicate holds; the workflow's own time is untouched. */
export async function waitForState(
  handle: WorkflowHandle,
  predicate: (state: WorkspaceState) => boolean,
  timeoutMs = 15_000,
): Promise<WorkspaceState> {
  const deadline = Date.now() + timeoutMs;
  let last: WorkspaceState | undefined;
  while (Date.now() < deadline) {
    last = await handle.query(stateQuery);
    if (predicate(last)) return last;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`state never matched; last state: ${JSON.stringify(last, null, 2)}`);
}

let sequence = 0;
export function uniqueId(prefix: string): string {
  sequence++;
  return `${prefix}-${process.pid}-${sequence}`;
}
