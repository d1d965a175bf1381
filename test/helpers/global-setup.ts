import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { localDatabaseUrl } from '../../scripts/postgres.js';
import { bundleInChildProcess } from '../../workflow-bundle.js';
import { buildService } from '../../scripts/build.js';
import { stopRecordedServers } from './test-servers.js';

declare module 'vitest' {
  export interface ProvidedContext {
    workflowBundlePath: string;
    databaseUrl: string;
    /** A folder for the run, removed when it ends. */
    runDir: string;
  }
}

/**
 * Bundles the workflow code once for every test file instead of once per file, compiles the
 * service (dist/) that the stacks' worker and API processes run, and finds the test database:
 * DATABASE_URL when set, else the local cluster scripts/postgres.sh starts. When the run ends it
 * stops the test servers the test processes kept (recordServer), and removes the run's folder.
 */
export default async function setup(project: TestProject): Promise<() => void> {
  project.provide('databaseUrl', process.env['DATABASE_URL'] ?? localDatabaseUrl('workspace_lifecycle_test'));
  const [{ code }] = await Promise.all([bundleInChildProcess(), buildService()]);
  const dir = mkdtempSync(join(tmpdir(), 'wl-run-'));
  const path = join(dir, 'workflows.js');
  writeFileSync(path, code);
  project.provide('workflowBundlePath', path);
  project.provide('runDir', dir);
  return () => {
    stopRecordedServers(dir);
    rmSync(dir, { recursive: true, force: true });
  };
}
