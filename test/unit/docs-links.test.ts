/**
 * Every relative link in the repository's Markdown resolves: the file or folder it names exists
 * inside the repository, and an anchor (`#…`) into a Markdown file names one of its headings, as
 * GitHub renders them. External links (a scheme such as https: or mailto:) are not followed.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { testScratchDir } from '../helpers/scratch.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Folders that hold no documentation of ours: dependencies, local state, build output. */
const SKIPPED_FOLDERS = new Set(['node_modules', 'data', 'artifacts', 'coverage']);

/** The Markdown files under `root`, relative to it, outside dot folders and SKIPPED_FOLDERS. */
function markdownFiles(root: string, folder = ''): string[] {
  return readdirSync(join(root, folder), { withFileTypes: true }).flatMap((entry) => {
    const path = join(folder, entry.name);
    if (entry.isDirectory())
      return entry.name.startsWith('.') || SKIPPED_FOLDERS.has(entry.name) ? [] : markdownFiles(root, path);
    return entry.isFile() && entry.name.endsWith('.md') ? [path] : [];
  });
}

/** Each line of the text, or '' for a line of a fenced code block (its fences included). */
function outsideFences(markdown: string): string[] {
  let fence: string | null = null;
  return markdown.split('\n').map((line) => {
    const marker = /^\s*(`{3,}|~{3,})/.exec(line)?.[1];
    if (fence === null) {
      if (marker === undefined) return line;
      fence = marker; // an opening fence
    } else if (marker !== undefined && marker[0] === fence[0] && marker.length >= fence.length) {
      fence = null; // its closing fence
    }
    return '';
  });
}

/** The text outside fenced code blocks, each inline code span replaced by a placeholder. */
function prose(markdown: string): string[] {
  return outsideFences(markdown).map((line) => line.replace(/(`+)(?:(?!\1).)+?\1/g, 'code'));
}

/** Link targets: inline links and images `[text](target "title")`, and reference definitions `[id]: target`. */
function linkTargets(markdown: string): string[] {
  return prose(markdown).flatMap((line) => [
    ...[...line.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((match) => match[1] ?? ''),
    ...[...line.matchAll(/^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/g)].map((match) => match[1] ?? ''),
  ]);
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, each space a hyphen. */
function slug(heading: string): string {
  return heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/`/g, '')
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\p{M}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** The anchors of a Markdown text's headings; a repeated one gets `-1`, `-2`, … as on GitHub. */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  // Outside fences but with code spans kept: their words are part of the heading's anchor.
  for (const line of outsideFences(markdown)) {
    const heading = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line)?.[1];
    if (heading === undefined) continue;
    const base = slug(heading);
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    result.add(count === 0 ? base : `${base}-${count}`);
  }
  return result;
}

/** Every link in the Markdown files under `root` that does not resolve, as `file: target (why)`. */
function brokenLinks(root: string): string[] {
  const broken: string[] = [];
  for (const file of markdownFiles(root)) {
    const text = readFileSync(join(root, file), 'utf8');
    for (const target of linkTargets(text)) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto: and the like
      const [rawPath = '', anchor] = target.split('#', 2);
      const path = decodeURIComponent(rawPath);
      const resolved = path === '' ? join(root, file) : resolve(root, dirname(file), path);
      const inside = relative(root, resolved);
      if (inside.startsWith(`..${sep}`) || inside === '..' || path.startsWith('/')) {
        broken.push(`${file}: ${target} (outside the repository)`);
        continue;
      }
      if (!existsSync(resolved)) {
        broken.push(`${file}: ${target} (no such file)`);
        continue;
      }
      if (anchor === undefined || !resolved.endsWith('.md') || statSync(resolved).isDirectory()) continue;
      if (!anchors(readFileSync(resolved, 'utf8')).has(decodeURIComponent(anchor)))
        broken.push(`${file}: ${target} (no heading #${anchor} in ${relative(root, resolved)})`);
    }
  }
  return broken;
}

describe('documentation links', () => {
  it('every relative link in the README and docs/ resolves, anchors included', () => {
    const files = markdownFiles(repoRoot);
    expect(files).toContain('README.md');
    expect(files.filter((file) => file.startsWith(`docs${sep}`)).length).toBeGreaterThan(0);
    const checked = files.flatMap((file) => linkTargets(readFileSync(join(repoRoot, file), 'utf8')));
    expect(checked.filter((target) => !/^[a-z][a-z0-9+.-]*:/i.test(target)).length).toBeGreaterThan(0);
    expect(brokenLinks(repoRoot)).toEqual([]);
  });

  it('finds a missing file, a missing anchor and a link out of the repository; accepts what resolves', () => {
    const root = testScratchDir('docs-links');
    mkdirSync(join(root, 'docs'));
    writeFileSync(join(root, 'code.ts'), '');
    writeFileSync(
      join(root, 'docs', 'guide.md'),
      [
        '# The guide',
        '## Running `npm start`: the dev server',
        '## Upgrades (refresh)',
        '## Notes',
        '## Notes',
        '```md',
        '## Not a heading',
        '[inside a fence](missing-in-fence.md)',
        '```',
      ].join('\n'),
    );
    writeFileSync(
      join(root, 'README.md'),
      [
        '[ok](docs/guide.md#running-npm-start-the-dev-server) [ok](docs/guide.md#upgrades-refresh)',
        '[ok](docs/guide.md#notes-1) [ok](./code.ts#L3) [ok](docs/) [ok](https://example.com/x#y)',
        '[ok](#a-heading) `[not a link](nowhere.md)`',
        '## A heading',
        '[gone](docs/missing.md) [no anchor](docs/guide.md#not-a-heading) [out](../elsewhere.md)',
        '![image](docs/missing.png)',
        '[ref]: docs/also-missing.md',
      ].join('\n'),
    );
    expect(brokenLinks(root)).toEqual([
      'README.md: docs/missing.md (no such file)',
      `README.md: docs/guide.md#not-a-heading (no heading #not-a-heading in ${join('docs', 'guide.md')})`,
      'README.md: ../elsewhere.md (outside the repository)',
      'README.md: docs/missing.png (no such file)',
      'README.md: docs/also-missing.md (no such file)',
    ]);
  });
});
