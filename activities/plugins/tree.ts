/**
 * A plugin tree as the worker stages and delivers it: regular files and folders only. A link
 * would make whoever copies or writes into the tree read or write outside it; a fifo, socket or
 * device would block a reader or reach a device. The tree is walked with lstat, never following
 * anything, and is bounded in depth, entries and bytes, so a hostile plugin can neither escape
 * its folder nor exhaust the worker.
 */
import { createHash } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { lstat, mkdir, open, opendir } from 'node:fs/promises';
import { join } from 'node:path';
import { PermanentPluginError } from './errors.js';

/** Folders nested deeper than this under a plugin's root are refused. */
export const MAX_TREE_DEPTH = 32;
/** A plugin holding more files and folders than this is refused. */
export const MAX_TREE_ENTRIES = 10_000;

export interface PluginTree {
  /** Folders, relative to the root with `/`, each after its parent. */
  dirs: string[];
  /** Regular files, relative to the root with `/`, in code-unit order of their paths. */
  files: { path: string; size: number }[];
  bytes: number;
}

/** What an entry that is not a regular file or folder is, for a message. */
export function describeEntry(info: Stats): string {
  if (info.isSymbolicLink()) return 'a symbolic link';
  if (info.isFIFO()) return 'a fifo';
  if (info.isSocket()) return 'a socket';
  if (info.isBlockDevice() || info.isCharacterDevice()) return 'a device';
  if (info.isDirectory()) return 'a folder';
  return 'a file';
}

/**
 * Walks the tree at `root` (a real folder), refusing anything but regular files and folders, a
 * folder deeper than MAX_TREE_DEPTH, more than MAX_TREE_ENTRIES entries, and more than `maxBytes`
 * in all. A refusal is a PermanentPluginError starting with `what` and naming the path inside
 * the plugin.
 */
export async function inspectTree(root: string, what: string, maxBytes = Infinity): Promise<PluginTree> {
  const top = await lstat(root).catch((err: unknown) => {
    throw new Error(`${what}: cannot be read (${err instanceof Error ? err.message : String(err)})`);
  });
  if (!top.isDirectory()) throw new PermanentPluginError(`${what}: the plugin is ${describeEntry(top)}, not a folder`);
  const tree: PluginTree = { dirs: [], files: [], bytes: 0 };
  let entries = 0;
  const walk = async (dir: string, depth: number): Promise<void> => {
    const names: string[] = [];
    // Read one entry at a time, so a folder of a million entries is refused, never held.
    for await (const entry of await opendir(join(root, dir))) {
      if (++entries > MAX_TREE_ENTRIES)
        throw new PermanentPluginError(
          `${what}: the plugin holds more than ${MAX_TREE_ENTRIES} files and folders, the most a plugin may hold`,
        );
      names.push(entry.name);
    }
    for (const name of names.sort()) {
      const path = dir === '' ? name : `${dir}/${name}`;
      const info = await lstat(join(root, path));
      if (info.isDirectory()) {
        if (depth + 1 > MAX_TREE_DEPTH)
          throw new PermanentPluginError(
            `${what}: ${path} is nested deeper than ${MAX_TREE_DEPTH} folders, the most a plugin may nest`,
          );
        tree.dirs.push(path);
        await walk(path, depth + 1);
      } else if (info.isFile()) {
        tree.bytes += info.size;
        if (tree.bytes > maxBytes)
          throw new PermanentPluginError(
            `${what}: ${path} (${info.size} bytes) brings the plugin to ${tree.bytes} bytes, which exceeds the plugin size cap of ${maxBytes} bytes`,
          );
        tree.files.push({ path, size: info.size });
      } else {
        throw new PermanentPluginError(
          `${what}: ${path} is ${describeEntry(info)}; a plugin may hold only regular files and folders (replace a link with what it points to)`,
        );
      }
    }
  };
  await walk('', 0);
  tree.files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return tree;
}

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK } = constants;
const COPY_CHUNK_BYTES = 64 * 1024;

/**
 * Copies an inspected tree from `from` into `to`, a folder this call creates (it fails if
 * anything is there): each file is opened without following a link and must still be the
 * regular file of its size the walk saw; each file and folder is created new, never written
 * through something already there. `skip` leaves out the files it names. Returns the sha256 of
 * the copied files' paths and contents, in the tree's order (a local plugin's revision).
 */
export async function copyTree(
  from: string,
  to: string,
  tree: PluginTree,
  what: string,
  skip: (path: string) => boolean = () => false,
): Promise<string> {
  await mkdir(to);
  for (const dir of tree.dirs) await mkdir(join(to, dir));
  const digest = createHash('sha256');
  const buffer = Buffer.alloc(COPY_CHUNK_BYTES);
  for (const file of tree.files) {
    if (skip(file.path)) continue;
    const source = await open(join(from, file.path), O_RDONLY | O_NOFOLLOW | O_NONBLOCK).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ELOOP')
        throw new PermanentPluginError(
          `${what}: ${file.path} is a symbolic link; a plugin may hold only regular files`,
        );
      throw err;
    });
    try {
      const info = await source.stat();
      if (!info.isFile())
        throw new PermanentPluginError(
          `${what}: ${file.path} is ${describeEntry(info)}; a plugin may hold only regular files`,
        );
      const target = await open(join(to, file.path), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
      try {
        digest.update(file.path).update('\0');
        let copied = 0;
        for (;;) {
          // One byte past the size the walk saw tells a file that grew since.
          const { bytesRead } = await source.read(buffer, 0, Math.min(buffer.length, file.size - copied + 1), null);
          if (bytesRead === 0) break;
          copied += bytesRead;
          if (copied > file.size) throw new Error(`${what}: ${file.path} changed while it was copied; try again`);
          digest.update(buffer.subarray(0, bytesRead));
          await target.write(buffer, 0, bytesRead);
        }
        digest.update('\0');
        await target.chmod(info.mode & 0o777);
      } finally {
        await target.close();
      }
    } finally {
      await source.close();
    }
  }
  return digest.digest('hex');
}
