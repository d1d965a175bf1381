/**
 * Hostile fixtures: a victim folder outside every plugin and box (which nothing may change), a
 * snapshot of a folder that sees links and fifos without following them, and the corpus of
 * plugin trees a hostile plugin author could publish.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Victim {
  root: string;
  /** A file a link points at: a write through the link would change it. */
  file: string;
  /** A folder holding a manifest named `linked` and a `.git` folder, for a linked sub-path. */
  dir: string;
}

/** Creates the victim folder at `root`. */
export function makeVictim(root: string): Victim {
  const dir = join(root, 'linked');
  mkdirSync(join(dir, '.git'), { recursive: true });
  writeFileSync(join(dir, 'plugin.yaml'), 'name: linked\n');
  writeFileSync(join(dir, '.git', 'HEAD'), 'ref: refs/heads/main\n');
  const file = join(root, 'secret.txt');
  writeFileSync(file, 'the worker must never write here\n', { mode: 0o644 });
  return { root, file, dir };
}

/**
 * Every entry under `root` (itself included) as one line: its path, type, mode and size, plus its
 * content's hash for a file and its target for a link. Nothing is followed, so two equal
 * snapshots mean nothing in the folder changed.
 */
export function snapshot(root: string): string {
  const lines: string[] = [];
  const visit = (path: string, rel: string): void => {
    const info = lstatSync(path);
    const mode = (info.mode & 0o7777).toString(8);
    if (info.isSymbolicLink()) lines.push(`${rel} link ${readlinkSync(path)}`);
    else if (info.isFile())
      lines.push(`${rel} file ${mode} ${createHash('sha256').update(readFileSync(path)).digest('hex')}`);
    else if (info.isDirectory()) {
      lines.push(`${rel} dir ${mode}`);
      for (const name of readdirSync(path).sort()) visit(join(path, name), `${rel}/${name}`);
    } else lines.push(`${rel} other ${mode}`);
  };
  visit(root, '.');
  return lines.join('\n');
}

/** A kind of hostile plugin tree, and the path inside the plugin that its refusal must name. */
export interface HostileTree {
  kind: string;
  /** The path inside the plugin the refusal names. */
  path: string;
  /** git cannot hold it (a fifo): local plugin folders and staged trees only. */
  localOnly?: boolean;
}

/** How deep the deep tree goes: past any sane plugin. */
export const DEEP_TREE_LEVELS = 40;

export const HOSTILE_TREES: HostileTree[] = [
  { kind: 'relative-link', path: 'docs/escape' },
  { kind: 'absolute-link', path: 'abs' },
  { kind: 'dotdot-link', path: 'up' },
  { kind: 'revision-link', path: '.revision' },
  { kind: 'fifo', path: 'pipe', localOnly: true },
  { kind: 'oversized', path: 'blob.bin' },
  { kind: 'deep', path: 'd/d/d/d' },
];

/**
 * Writes a plugin named `name` into `dir` with the hostile part `kind` aims at `victim`; the
 * plugin is otherwise valid. `capBytes` is the plugin size cap the oversized file passes.
 */
export function writeHostileTree(dir: string, kind: string, name: string, victim: Victim, capBytes: number): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'plugin.yaml'), `name: ${name}\nversion: "1.0"\n`);
  writeFileSync(join(dir, 'SKILL.md'), `# ${name}\n`);
  switch (kind) {
    case 'relative-link':
      mkdirSync(join(dir, 'docs'));
      symlinkSync('../../../../victim/secret.txt', join(dir, 'docs', 'escape'));
      return;
    case 'absolute-link':
      symlinkSync(victim.file, join(dir, 'abs'));
      return;
    case 'dotdot-link':
      symlinkSync('..', join(dir, 'up'));
      return;
    case 'revision-link':
      symlinkSync(victim.file, join(dir, '.revision'));
      return;
    case 'fifo':
      execFileSync('mkfifo', [join(dir, 'pipe')]);
      return;
    case 'oversized':
      writeFileSync(join(dir, 'blob.bin'), Buffer.alloc(capBytes + 1, 0x61));
      return;
    case 'deep': {
      const deepest = join(dir, ...Array<string>(DEEP_TREE_LEVELS).fill('d'));
      mkdirSync(deepest, { recursive: true });
      writeFileSync(join(deepest, 'leaf.txt'), 'deep\n');
      return;
    }
    default:
      throw new Error(`unknown hostile tree ${kind}`);
  }
}
