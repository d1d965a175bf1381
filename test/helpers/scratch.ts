import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, onTestFinished } from 'vitest';

const made = (prefix: string): string => mkdtempSync(join(tmpdir(), `wl-${prefix}-`));
const remove = (dir: string) => (): void => rmSync(dir, { recursive: true, force: true });

/**
 * A fresh folder under the system's temporary folder for a test file, removed after its tests.
 * Called at the top of the file, before its own afterAll hooks: vitest runs those last-registered
 * first, so they stop what still uses the folder before it goes.
 */
export function fileScratchDir(prefix: string): string {
  const dir = made(prefix);
  afterAll(remove(dir));
  return dir;
}

/** A fresh folder for one test (called inside it), removed when the test ends, whatever its outcome. */
export function testScratchDir(prefix: string): string {
  const dir = made(prefix);
  onTestFinished(remove(dir));
  return dir;
}
