import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

/**
 * Order of the files: first the two that take longest and mostly wait on their processes (the
 * worker-kill rows: timeouts and restarts; `npm start` end to end), so the rest runs beside them
 * instead of after them; last the PostgreSQL row, whose refusals must stay fast (p50 < 100 ms) and
 * so want the cores the end of the run leaves free. The others keep vitest's order (without its
 * cache: the largest first).
 */
const first = ['test/chaos/worker-kill.test.ts', 'test/e2e/start.test.ts'];
const last = ['test/chaos/postgres.test.ts'];

class FileOrder extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (file: TestSpecification): number => {
      const named = (list: string[]): number => list.findIndex((path) => file.moduleId.endsWith(`/${path}`));
      if (named(first) !== -1) return named(first);
      return named(last) === -1 ? first.length : first.length + 1 + named(last);
    };
    // A stable sort: within a rank, vitest's order stands.
    return (await super.sort(files)).sort((a, b) => rank(a) - rank(b));
  }
}

export default defineConfig({
  test: {
    // The Temporal SDK's native bridge must not be loaded into worker threads.
    pool: 'forks',
    // Three files at a time on two cores: the two that start first mostly wait on their
    // processes, and a third file keeps both cores busy meanwhile.
    maxWorkers: 3,
    sequence: { sequencer: FileOrder },
    globalSetup: ['test/helpers/global-setup.ts'],
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default', './test/helpers/summary-reporter.ts'],
  },
});
