import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

/**
 * Order of the files. First the fault rows, which take longest and mostly wait on their
 * processes (timeouts, restarts), so the rest runs beside them instead of after them. `npm start`
 * end to end, the other long one, goes fifth: it starts once one of the first four is done, not
 * beside the fault rows' two stacks starting (stacks and test servers starting at once leave a
 * 2-core box too busy for any of them to come up in time). Then the files that are long but small
 * (a stack of their own, or real seconds of retries while a database is away), which vitest's
 * order would start last, so the run would end waiting on them. The others keep vitest's order
 * (without its cache: the largest first).
 */
const FIRST = 'test/chaos/faults.test.ts';
const FIFTH = 'test/e2e/start.test.ts';
const LONG_BUT_SMALL = ['test/e2e/stack.test.ts', 'test/workflow/fleet-liveness.test.ts'];

class FileOrder extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const is = (path: string) => (file: TestSpecification) => file.moduleId.endsWith(`/${path}`);
    const sorted = await super.sort(files);
    const rest = sorted.filter((file) => ![FIRST, FIFTH, ...LONG_BUT_SMALL].some((path) => is(path)(file)));
    const named = (path: string): TestSpecification[] => sorted.filter(is(path));
    return [...named(FIRST), ...rest.slice(0, 3), ...named(FIFTH), ...LONG_BUT_SMALL.flatMap(named), ...rest.slice(3)];
  }
}

export default defineConfig({
  test: {
    // The Temporal SDK's native bridge must not be loaded into worker threads.
    pool: 'forks',
    // Files share their process and its loaded modules: a fresh process per file spent a third of
    // the run's CPU importing the same modules again. Whatever a file changes in the process
    // (environment, the Temporal runtime's logger, tracing) it puts back in its afterAll.
    isolate: false,
    // Four files at a time on two cores: the fault rows and the end-to-end files mostly wait on
    // their processes, and the others keep both cores busy meanwhile.
    maxWorkers: 4,
    sequence: { sequencer: FileOrder },
    globalSetup: ['test/helpers/global-setup.ts'],
    include: ['test/**/*.test.ts'],
    // The production shape's end-to-end test runs in `npm run test:cluster` (vitest.cluster.config.ts).
    exclude: ['test/cluster/**', 'node_modules/**'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default', './test/helpers/summary-reporter.ts'],
  },
});
