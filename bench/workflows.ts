/** Workflows for the signal benchmark: the real workspace workflow and a no-op baseline. */
import { condition, defineQuery, setHandler } from '@temporalio/workflow';
import { heartbeatSignal } from '../workflows/definitions.js';
import '../workflows/stack-traces.js';

export { workspaceWorkflow } from '../workflows/workspace.js';

export const signalCountQuery = defineQuery<number>('signalCount');

/** Baseline: counts heartbeat signals and does nothing else. */
export async function countSignalsWorkflow(): Promise<void> {
  let count = 0;
  setHandler(heartbeatSignal, () => {
    count++;
  });
  setHandler(signalCountQuery, () => count);
  await condition(() => false);
}
