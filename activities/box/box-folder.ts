/**
 * A local box's folder, as the local driver reads and writes it. The folder is the runtime's: it
 * runs there as the worker's user and can put a link, fifo or huge file wherever the driver
 * looks. So the driver follows no link there:
 *   - every folder on the way to a file is checked with lstat to be a real folder;
 *   - a file is opened with O_NOFOLLOW (and O_NONBLOCK, so a fifo never blocks the open), must
 *     be a regular file, and on Linux is checked to be open at the path asked for (so a link
 *     swapped into the way after the checks is caught too);
 *   - a file the driver writes whole is created new (O_EXCL) beside its place and renamed over
 *     it: a link found there is removed, never written through;
 *   - reads are capped, with a buffer of the cap, never the whole file.
 * A link or other entry where the driver needs a folder or a regular file is refused
 * (BoxUnsafePath, naming the path): someone planted it, and a person should look.
 */
import { constants, type Stats } from 'node:fs';
import { lstat, mkdir, open, readlink, realpath, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { describeEntry } from '../plugins/tree.js';
import { permanentBoxError } from './driver.js';

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_APPEND, O_NOFOLLOW, O_NONBLOCK } = constants;

export class BoxFolder {
  private realRoot: Promise<string> | null = null;

  constructor(
    /** The box's folder; a real folder (the caller checked). */
    readonly root: string,
    private readonly workspaceId: string,
  ) {}

  /** A refusal naming the path in the box and what is there. */
  unsafe(rel: string, found: string, need: string): Error {
    return permanentBoxError(
      'BoxUnsafePath',
      `box of workspace ${this.workspaceId}: ${rel} is ${found} where the driver needs ${need}; ` +
        `the driver follows no link in a box folder: remove it (${join(this.root, rel)})`,
    );
  }

  /** What is at `rel`, not following a link: its lstat, or null when nothing is there. */
  async entry(rel: string): Promise<Stats | null> {
    return lstat(join(this.root, rel)).catch((err: unknown) => {
      if (isMissing(err)) return null;
      throw err;
    });
  }

  /**
   * Whether each folder from the box down to `rel` is there; refuses one that is a link or
   * anything but a folder. With `create`, missing folders are made (and then it is always true).
   */
  async folders(rel: string, create = false): Promise<boolean> {
    let at = '';
    for (const part of rel.split('/')) {
      at = at === '' ? part : `${at}/${part}`;
      const info = await this.entry(at);
      if (info === null) {
        if (!create) return false;
        await mkdir(join(this.root, at)).catch((err: unknown) => {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        });
        await this.expectFolder(at);
      } else if (!info.isDirectory()) throw this.unsafe(at, describeEntry(info), 'a folder');
    }
    return true;
  }

  /** Refuses unless `rel` is a real folder. */
  async expectFolder(rel: string): Promise<void> {
    const info = await this.entry(rel);
    if (info === null || !info.isDirectory())
      throw this.unsafe(rel, info === null ? 'missing' : describeEntry(info), 'a folder');
  }

  /** Refuses unless `rel` is a regular file or absent. */
  async expectFileOrNothing(rel: string): Promise<void> {
    const info = await this.entry(rel);
    if (info !== null && !info.isFile()) throw this.unsafe(rel, describeEntry(info), 'a regular file');
  }

  /**
   * The text of the regular file `rel` (its folders real), null when it or a folder on the way is
   * missing. Past `maxBytes` it fails (BoxOutputTooLarge, naming the cap and `what`).
   */
  async read(rel: string, maxBytes: number, what: string): Promise<string | null> {
    const parent = rel.split('/').slice(0, -1).join('/');
    if (parent !== '' && !(await this.folders(parent))) return null;
    const file = await this.open(rel, O_RDONLY);
    if (file === null) return null;
    try {
      const text = await readCapped(file, maxBytes);
      if (text === null)
        throw permanentBoxError(
          'BoxOutputTooLarge',
          `box of workspace ${this.workspaceId}: ${rel} holds more than ${maxBytes} bytes, the cap for ${what}; ` +
            `the worker reads no more of it: fix or remove it on the box (${join(this.root, rel)})`,
        );
      return text;
    } finally {
      await file.close();
    }
  }

  /** Appends `text` to the regular file `rel` in the box's top folder, creating it if missing. */
  async append(rel: string, text: string): Promise<void> {
    const file = await this.openForAppend(rel);
    try {
      await file.appendFile(text);
    } finally {
      await file.close();
    }
  }

  /** Opens the regular file `rel` for appending, creating it if missing (a log another process writes to). */
  async openForAppend(rel: string): Promise<FileHandle> {
    const file = await this.open(rel, O_WRONLY | O_APPEND | O_CREAT);
    if (file === null) throw new Error(`box of workspace ${this.workspaceId}: ${rel} vanished while being opened`);
    return file;
  }

  /**
   * Creates `rel` new for writing (mode `mode`): whatever file or link was there is removed
   * first, never written through; a folder there is refused.
   */
  async create(rel: string, mode = 0o644): Promise<FileHandle> {
    const info = await this.entry(rel);
    if (info?.isDirectory()) throw this.unsafe(rel, 'a folder', 'a file it writes');
    if (info !== null) await rm(join(this.root, rel), { force: true });
    const file = await this.open(rel, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (file === null) throw new Error(`box of workspace ${this.workspaceId}: ${rel} vanished while being created`);
    await file.chmod(mode);
    return file;
  }

  /**
   * Writes `text` to `rel` whole: into `<rel>.tmp`, created new, then renamed over `rel` (which
   * replaces a link there, never follows it), so a reader never sees half of it.
   */
  async writeWhole(rel: string, text: string, mode = 0o644): Promise<void> {
    const file = await this.create(`${rel}.tmp`, mode);
    try {
      await file.writeFile(text);
    } finally {
      await file.close();
    }
    await this.replace(`${rel}.tmp`, rel);
  }

  /** Renames `from` over `to`: a file or link at `to` is replaced; a folder there is refused. */
  async replace(from: string, to: string): Promise<void> {
    const info = await this.entry(to);
    if (info?.isDirectory()) throw this.unsafe(to, 'a folder', 'a file it writes');
    await rename(join(this.root, from), join(this.root, to));
  }

  /** The box folder's real path; refused when the folder itself is a link (the folders above it are the operator's). */
  private async resolveRoot(): Promise<string> {
    const info = await lstat(this.root);
    if (!info.isDirectory()) throw this.unsafe('.', describeEntry(info), 'the box folder');
    return realpath(this.root);
  }

  /**
   * Opens `rel` without following a link at it (O_NOFOLLOW) and, on Linux, checks the open file
   * is at the path asked for, so no link anywhere on the way was followed. Null when `rel` is
   * missing (and the flags do not create it). A link, or anything but a regular file, is refused.
   */
  private async open(rel: string, flags: number, mode = 0o644): Promise<FileHandle | null> {
    const path = join(this.root, rel);
    let file: FileHandle;
    try {
      file = await open(path, flags | O_NOFOLLOW | O_NONBLOCK, mode);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && (flags & O_CREAT) === 0) return null;
      if (code === 'ELOOP' || code === 'EMLINK') throw this.unsafe(rel, 'a symbolic link', 'a regular file');
      if (code === 'ENXIO' || code === 'EISDIR') {
        const info = await this.entry(rel);
        throw this.unsafe(rel, info === null ? 'missing' : describeEntry(info), 'a regular file');
      }
      throw err;
    }
    try {
      const info = await file.stat();
      if (!info.isFile()) throw this.unsafe(rel, describeEntry(info), 'a regular file');
      const opened = await readlink(`/proc/self/fd/${file.fd}`).catch(() => null);
      this.realRoot ??= this.resolveRoot();
      // A file renamed over or removed since it was opened reads as `<path> (deleted)`: it was there.
      if (opened !== null && opened.replace(/ \(deleted\)$/, '') !== join(await this.realRoot, rel))
        throw this.unsafe(rel, `reached through a link (it opened ${opened})`, 'a regular file in the box');
      return file;
    } catch (err) {
      await file.close();
      throw err;
    }
  }
}

/** The file's text from its start if it holds at most `maxBytes`; null past that. At most `maxBytes + 1` bytes are held. */
export async function readCapped(file: FileHandle, maxBytes: number): Promise<string | null> {
  const buffer = Buffer.alloc(maxBytes + 1);
  let length = 0;
  for (;;) {
    const { bytesRead } = await file.read(buffer, length, buffer.length - length, null);
    if (bytesRead === 0) break;
    length += bytesRead;
    if (length > maxBytes) return null;
  }
  return buffer.toString('utf8', 0, length);
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
