import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const identity = ['-c', 'user.email=test@workspace-lifecycle', '-c', 'user.name=test'];

/** Commits everything in the repository at `dir`. */
export function commitAll(dir: string, message: string): void {
  execFileSync('git', [...identity, '-C', dir, 'add', '.']);
  execFileSync('git', [...identity, '-C', dir, 'commit', '-q', '-m', message]);
}

/** A git repository at `<root>/<owner>/<repo>.git` holding a plugin with the given name; returns its commit. */
export function createPluginRepo(
  root: string,
  owner: string,
  repo: string,
  manifest: Record<string, string> = { name: repo, version: '1.0.0' },
): string {
  const dir = join(root, owner, `${repo}.git`);
  mkdirSync(dir, { recursive: true });
  const git = (...args: string[]): string =>
    execFileSync('git', [...identity, '-C', dir, ...args], { encoding: 'utf8' });
  git('init', '-q', '-b', 'main');
  writeFileSync(
    join(dir, 'plugin.yaml'),
    Object.entries(manifest)
      .map(([key, value]) => `${key}: ${value}`)
      .join('\n') + '\n',
  );
  writeFileSync(join(dir, 'SKILL.md'), `# ${repo}\n`);
  commitAll(dir, `plugin ${repo}`);
  git('tag', 'v1');
  return git('rev-parse', 'HEAD').trim();
}
