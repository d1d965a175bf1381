import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

/**
 * The files that mostly wait on real processes (the fault rows, `npm start`, the Web UI) start
 * first, the longest first, so the rest runs beside them instead of after them; the others keep
 * vitest's order (on a machine without its cache: the largest files first).
 */
const startFirst = ['test/chaos/worker-kill.test.ts', 'test/e2e/start.test.ts', 'test/chaos/', 'test/e2e/'];

class WaitingFilesFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (file: TestSpecification): number => {
      const index = startFirst.findIndex((prefix) => file.moduleId.includes(`/${prefix}`));
      return index === -1 ? startFirst.length : index;
    };
    // A stable sort: within a rank, vitest's order stands.
    return (await super.sort(files)).sort((a, b) => rank(a) - rank(b));
  }
}

export default defineConfig({
  test: {
    // The Temporal SDK's native bridge must not be loaded into worker threads.
    pool: 'forks',
    // Each workflow test file starts its own Java test server; two cores run two at a time.
    maxWorkers: 2,
    sequence: { sequencer: WaitingFilesFirst },
    globalSetup: ['test/helpers/global-setup.ts'],
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default', './test/helpers/summary-reporter.ts'],
  },
});
