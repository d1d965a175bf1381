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

Error.prepareStackTrace = (error: Error, frames: NodeJS.CallSite[]): string =>
  [Error.prototype.toString.call(error), ...frames.map(formatFrame)].join('\n');
