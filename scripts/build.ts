/**
 * `npm run build`: the service's modules compiled to JavaScript under dist/, in the same layout,
 * so the worker and the API run on plain Node (`node dist/worker.js`, `node dist/api/main.js`)
 * instead of under tsx, whose loader is about a fifth of an idle worker's memory
 * (docs/performance.md). esbuild strips the types one file at a time, as tsx does when it loads
 * a file; `npm run typecheck` checks them. A file is compiled again only when its source is newer
 * than its output, and written by a rename, so a process running from dist/ while another build
 * runs reads whole files.
 */
import { transform } from 'esbuild';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { projectPath, projectRoot } from '../project.js';

/** Where the build goes. */
export const distDir = projectPath('dist');

/** Folders that are not the service: tests, benches, fault injection, and the build itself. */
const NOT_THE_SERVICE = new Set(['node_modules', 'dist', 'test', 'bench', 'chaos', 'data', 'artifacts', 'coverage']);

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return NOT_THE_SERVICE.has(entry.name) || entry.name.startsWith('.') ? [] : sources(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') && !entry.name.startsWith('vitest.')
      ? [path]
      : [];
  });
}

/**
 * Compiles every module of the service whose output under `outDir` is missing or older than its
 * source; returns how many.
 */
export async function buildService(outDir: string = distDir): Promise<number> {
  let changed = 0;
  for (const source of sources(projectRoot)) {
    const target = join(outDir, relative(projectRoot, source)).replace(/\.ts$/, '.js');
    if (existsSync(target) && statSync(target).mtimeMs >= statSync(source).mtimeMs) continue;
    const { code } = await transform(readFileSync(source, 'utf8'), {
      loader: 'ts',
      format: 'esm',
      platform: 'node',
      target: 'node20',
      sourcefile: source,
    });
    mkdirSync(dirname(target), { recursive: true });
    const partial = `${target}.${randomBytes(6).toString('hex')}.partial`;
    writeFileSync(partial, code);
    renameSync(partial, target);
    changed++;
  }
  return changed;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const changed = await buildService();
  console.log(`build: dist/ is up to date (${changed} file(s) compiled)`);
}
