/**
 * Plain stack traces inside the workflow sandbox, set once when the worker thread preloads
 * workflows/ (before the SDK freezes the sandbox's globals).
 *
 * Why: without its own `Error.prepareStackTrace`, the sandbox's stacks are formatted by the SDK,
 * which, for every promise a workflow creates, maps the stack's frames through the bundle's
 * source map and keeps the result until the promise settles (for the Web UI's "Stack Trace"
 * tab). A workspace workflow always has promises pending (its deadline loop, its handlers):
 * each cached workspace held 73 KB of heap, 52 KB with this formatter
 * (`npm run bench:cache-memory -- --split`). Errors keep a readable stack, in the bundle's
 * positions; the "Stack Trace" tab shows none: the workflow's current details and its state
 * query say where it waits.
 */
function formatFrame(frame: NodeJS.CallSite): string {
  const where = `${frame.getFileName() ?? '<anonymous>'}:${frame.getLineNumber() ?? 0}:${frame.getColumnNumber() ?? 0}`;
  const name = frame.getFunctionName() ?? frame.getMethodName();
  return name ? `    at ${name} (${where})` : `    at ${where}`;
}

/**
 * The SDK's promise hook (in its `vm-shared` module) makes an Error for every promise a workflow
 * creates and reads its stack; with this formatter in place it keeps nothing of it. Formatting
 * those stacks frame by frame (each frame's line and column) took 7% of the worker's CPU during a
 * fleet's setup, so they get an empty one.
 */
function madeByThePromiseHook(frames: NodeJS.CallSite[]): boolean {
  return /[\\/]vm-shared\.[cm]?js$/.test(frames[0]?.getFileName() ?? '');
}

Error.prepareStackTrace = (error: Error, frames: NodeJS.CallSite[]): string =>
  madeByThePromiseHook(frames) ? '' : [Error.prototype.toString.call(error), ...frames.map(formatFrame)].join('\n');
