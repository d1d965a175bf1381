import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { localDatabaseUrl } from '../../scripts/postgres.js';
import { bundleInChildProcess } from '../../workflow-bundle.js';
import { buildService } from '../../scripts/build.js';

declare module 'vitest' {
  export interface ProvidedContext {
    workflowBundlePath: string;
    databaseUrl: string;
  }
}

/**
 * Bundles the workflow code once for every test file instead of once per file, compiles the
 * service (dist/) that the stacks' worker and API processes run, and finds the test database:
 * DATABASE_URL when set, else the local cluster scripts/postgres.sh starts. The bundle's folder
 * is removed when the run ends.
 */
export default async function setup(project: TestProject): Promise<() => void> {
  project.provide('databaseUrl', process.env['DATABASE_URL'] ?? localDatabaseUrl('workspace_lifecycle_test'));
  const [{ code }] = await Promise.all([bundleInChildProcess(), buildService()]);
  const dir = mkdtempSync(join(tmpdir(), 'wl-bundle-'));
  const path = join(dir, 'workflows.js');
  writeFileSync(path, code);
  project.provide('workflowBundlePath', path);
  return () => rmSync(dir, { recursive: true, force: true });
}
