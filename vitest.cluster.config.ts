import { defineConfig } from 'vitest/config';

/**
 * `npm run test:cluster`: the production shape end to end (test/cluster/), apart from `npm test`
 * because it needs the Temporal server `scripts/toolchain.sh --cluster` builds and takes minutes.
 */
export default defineConfig({
  test: {
    pool: 'forks',
    include: ['test/cluster/**/*.test.ts'],
    testTimeout: 600_000,
    // Stopping the shape drains two workers and stops five servers.
    hookTimeout: 120_000,
    reporters: ['default', './test/helpers/summary-reporter.ts'],
  },
});
