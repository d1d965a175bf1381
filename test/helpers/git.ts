import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SourceSettings } from '../../activities/plugins/source.js';
import type { StageSettings } from '../../activities/plugins/stage.js';

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

/** Source settings that serve gitea:// and github:// from the repositories under `<root>/repos`. */
export function localSourceSettings(root: string, maxPluginBytes: number): SourceSettings & StageSettings {
  const repos = join(root, 'repos');
  return {
    giteaBaseUrl: `file://${repos}`,
    githubBaseUrl: `file://${repos}`,
    allowUnpinned: false,
    sourceHosts: null,
    fileRoots: [root],
    urlPolicy: { allowLoopback: false, allowPrivate: false },
    cacheDir: join(root, 'cache'),
    pluginsDir: join(root, 'plugins'),
    maxPluginBytes,
    fetchTimeoutMs: 60_000,
    cacheMaxAgeMs: 24 * 3_600_000,
  };
}
