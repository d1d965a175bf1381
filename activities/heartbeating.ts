import { Context } from '@temporalio/activity';

/** How often a long activity tells Temporal its worker is alive (well inside the heartbeat timeout). */
const HEARTBEAT_EVERY_MS = 2_000;

/**
 * Runs `work` while heartbeating, so a worker that dies mid-activity is noticed within the
 * heartbeat timeout and the activity retried elsewhere. Outside an activity (a direct call in a
 * benchmark or test) it just runs `work`.
 */
export async function heartbeating<T>(work: () => Promise<T>): Promise<T> {
  let context: Context;
  try {
    context = Context.current();
  } catch {
    return work();
  }
  context.heartbeat();
  const timer = setInterval(() => context.heartbeat(), HEARTBEAT_EVERY_MS);
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}
