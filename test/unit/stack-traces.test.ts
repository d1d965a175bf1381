/** The workflow sandbox's stack formatter (workflows/stack-traces.ts), tried on frames made up here. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

type Format = (error: Error, frames: NodeJS.CallSite[]) => string;

/** A call site with only what the formatter reads. */
function frame(fileName: string, functionName: string | null, line = 7, column = 3): NodeJS.CallSite {
  const site: Partial<NodeJS.CallSite> = {
    getFileName: () => fileName,
    getFunctionName: () => functionName,
    getMethodName: () => null,
    getLineNumber: () => line,
    getColumnNumber: () => column,
  };
  return site as NodeJS.CallSite;
}

describe('the sandbox stack formatter', () => {
  const original: unknown = Reflect.get(Error, 'prepareStackTrace');
  let format: Format;
  beforeAll(async () => {
    // The module sets the formatter of the realm it is loaded in: this test process's, until afterAll.
    await import('../../workflows/stack-traces.js');
    format = Reflect.get(Error, 'prepareStackTrace') as Format;
  });
  afterAll(() => {
    Reflect.set(Error, 'prepareStackTrace', original);
  });

  it("formats an error's frames plainly, positions in the bundle", () => {
    const stack = format(new TypeError('bad payload'), [
      frame('/tmp/wl-bundle/workflows.js', 'apply', 120, 9),
      frame('/tmp/wl-bundle/workflows.js', null, 88, 1),
    ]);
    expect(stack).toBe(
      [
        'TypeError: bad payload',
        '    at apply (/tmp/wl-bundle/workflows.js:120:9)',
        '    at /tmp/wl-bundle/workflows.js:88:1',
      ].join('\n'),
    );
  });

  it("gives the SDK's promise hook an empty stack without reading a frame's position", () => {
    let positionsRead = 0;
    const hook = frame('/app/node_modules/@temporalio/worker/lib/workflow/vm-shared.js', 'init');
    const counted = (site: NodeJS.CallSite): NodeJS.CallSite => ({
      ...site,
      getLineNumber: () => ++positionsRead,
      getColumnNumber: () => ++positionsRead,
    });
    expect(format(new Error(), [counted(hook), counted(frame('/tmp/wl-bundle/workflows.js', 'run'))])).toBe('');
    expect(positionsRead).toBe(0);
  });
});
