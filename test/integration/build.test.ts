/**
 * `npm run build` (scripts/build.ts): the service compiled under dist/ in the source's layout,
 * which the stacks' worker and API processes run on plain Node. A compiled module names the
 * project's files from the project's folder, not from dist/; a file is compiled again only when
 * its output is older than its source.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, statSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { projectPath, projectRoot } from '../../project.js';
import { buildService, distDir } from '../../scripts/build.js';
import { testScratchDir } from '../helpers/scratch.js';

/** What a compiled module says, run by plain Node from dist/. */
function compiled(module: string, expression: string): string {
  const script = `const m = await import(${JSON.stringify(join(distDir, module))}); console.log(${expression});`;
  return execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' }).trim();
}

describe('npm run build', () => {
  it('compiles the worker and the API, whose modules find the project files from dist/', async () => {
    await buildService();
    expect(existsSync(join(distDir, 'worker.js'))).toBe(true);
    expect(existsSync(join(distDir, 'api', 'main.js'))).toBe(true);
    expect(existsSync(join(distDir, 'test'))).toBe(false);
    expect(compiled('project.js', 'm.projectRoot')).toBe(projectRoot);
    expect(compiled('db/migrate.js', 'm.migrationsDir')).toBe(projectPath('db', 'migrations'));
    expect(compiled('workflow-bundle.js', 'm.workflowsPath')).toBe(projectPath('workflows', 'index.ts'));
  });

  it('compiles again only what is older than its source', async () => {
    // A folder of its own: the stacks of other test files build dist/ meanwhile.
    const out = testScratchDir('build');
    const compiledFiles = await buildService(out);
    expect(compiledFiles).toBeGreaterThan(50);
    expect(await buildService(out)).toBe(0);
    const output = join(out, 'url-guard.js');
    const earlier = new Date(statSync(projectPath('url-guard.ts')).mtimeMs - 1_000);
    utimesSync(output, earlier, earlier);
    expect(await buildService(out)).toBe(1);
    expect(await buildService(out)).toBe(0);
  });
});
