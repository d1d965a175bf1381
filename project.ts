/**
 * The project's folder, found from this module's place: the nearest folder above it with a
 * package.json. The same whether the module runs from its source under tsx or compiled under
 * dist/ (scripts/build.ts), so files the code reads beside it (migrations, scripts, the workflow
 * sources the bundler reads, data/) are named from here, never from a module's own place.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

export const projectRoot = findRoot(dirname(fileURLToPath(import.meta.url)));

/** A path inside the project, e.g. `projectPath('db', 'migrations')`. */
export function projectPath(...segments: string[]): string {
  return join(projectRoot, ...segments);
}
