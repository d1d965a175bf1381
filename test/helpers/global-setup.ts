import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { bundleWorkflows } from './bundle.js';

declare module 'vitest' {
  export interface ProvidedContext {
    workflowBundlePath: string;
  }
}

/** Bundles the workflow code once for every test file instead of once per file. */
export default async function setup(project: TestProject): Promise<void> {
  const code = await bundleWorkflows();
  const path = join(mkdtempSync(join(tmpdir(), 'wl-bundle-')), 'workflows.js');
  writeFileSync(path, code);
  project.provide('workflowBundlePath', path);
}
