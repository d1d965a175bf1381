import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

/**
 * Order of the files. First the worker-kill rows, which take longest and mostly wait on their
 * processes (timeouts, restarts), so the rest runs beside them instead of after them. `npm start`
 * end to end, the other long one, goes fourth: it starts once one of the first three is done,
 * not beside the worker-kill rows' own stack starting (two stacks and a test server starting at
 * once leave a 2-core box too busy for either to come up in time). Then the files that are long
 * but small (a stack of their own, or real seconds of retries while a database is away), which
 * vitest's order would start last, so the run would end waiting on them. The PostgreSQL row
 * starts beside the last files rather than after them: its refusals stay fast beside other files
 * too (p50 5 ms, goal < 100 ms). The others keep vitest's order (without its cache: the largest
 * first).
 */
const FIRST = 'test/chaos/worker-kill.test.ts';
const FOURTH = 'test/e2e/start.test.ts';
const LONG_BUT_SMALL = [
  'test/e2e/stack.test.ts',
  'test/e2e/bench-heartbeat.test.ts',
  'test/workflow/fleet-liveness.test.ts',
];
const BESIDE_THE_LAST = 'test/chaos/postgres.test.ts';
/** How many files run after the PostgreSQL row starts: about its own length of small files. */
const AFTER_IT = 32;

class FileOrder extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const is = (path: string) => (file: TestSpecification) => file.moduleId.endsWith(`/${path}`);
    const sorted = await super.sort(files);
    const rest = sorted.filter(
      (file) => ![FIRST, FOURTH, ...LONG_BUT_SMALL, BESIDE_THE_LAST].some((path) => is(path)(file)),
    );
    const named = (path: string): TestSpecification[] => sorted.filter(is(path));
    const tail = Math.max(2, rest.length - AFTER_IT);
    return [
      ...named(FIRST),
      ...rest.slice(0, 2),
      ...named(FOURTH),
      ...LONG_BUT_SMALL.flatMap(named),
      ...rest.slice(2, tail),
      ...named(BESIDE_THE_LAST),
      ...rest.slice(tail),
    ];
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
    // Three files at a time on two cores: the worker-kill rows and `npm start` mostly wait on
    // their processes, and a third file keeps both cores busy meanwhile.
    maxWorkers: 3,
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
