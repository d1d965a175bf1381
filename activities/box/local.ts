/**
 * The local box driver: each workspace's box is a directory `<root>/<workspaceId>/` with its
 * plugins under `configs/plugins/<name>/`, plus an optional managed runtime process (restart =
 * stop and start it; is-running = the process is alive). It makes the whole system runnable
 * on one machine. `box-events.log` in the box records each delivery and restart that did work.
 *
 * A restart is recorded by the runtime it starts: a small shell wrapper writes the box event and
 * `runtime.pid` ("<pid> <launch id>"), then execs the runtime. So the record and the
 * launch cannot be told apart by a crash of the worker: a retried restart whose id the record
 * already names was done, and is not done twice. The wrapper writes to files the driver opened for
 * it (descriptors 3 and 4), so it follows no link either.
 *
 * The box folder is the runtime's, so every file in it is reached through BoxFolder (no link is
 * followed, every read is capped), and the runtime is started with an allow-list of this
 * process's environment (RUNTIME_ENV_ALLOWED), never its secrets. The local driver is for one
 * trusted tenant: its runtimes run as the worker's user. The SSH driver is the isolation boundary.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdir, open, opendir, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { assertSafePluginName, INCOMING_SUFFIX, REMOVING_SUFFIX } from '../plugins/errors.js';
import { MANIFEST_FILE, MAX_MANIFEST_BYTES, type StagedPlugin } from '../plugins/stage.js';
import { copyTree, describeEntry, inspectTree } from '../plugins/tree.js';
import { BoxFolder, readCapped } from './box-folder.js';
import {
  BOOT_CREDENTIAL_FILE,
  BoxUnavailableError,
  MAX_LISTING_BYTES,
  MAX_RECORD_BYTES,
  permanentBoxError,
  type BoxDriver,
  type BoxPlugin,
} from './driver.js';

export interface LocalBoxSettings {
  root: string;
  /** The runtime to manage in each box, e.g. ['node', 'runtime.js']; none = no process. */
  runtimeCommand: string[] | null;
  /**
   * Variables the runtime gets besides the allowed part of this process's environment
   * (RUNTIME_ENV_ALLOWED), e.g. `WL_API_URL` for the simulated runtime.
   */
  runtimeEnv?: Record<string, string>;
}

/**
 * The variables of this process's environment a runtime gets (when set): what a program needs to
 * run (search path, home, user, locale, time zone, temporary folder) and the simulated runtime's
 * own settings. Nothing else: the worker's environment holds secrets (DATABASE_URL,
 * TEMPORAL_API_KEY, WL_ADMIN_TOKEN, cloud credentials) a runtime must never see. More variables
 * reach a runtime only by name, through `runtimeEnv` (WL_RUNTIME_PASS_ENV).
 */
export const RUNTIME_ENV_ALLOWED = [
  'PATH',
  'HOME',
  'USER',
  'LOGNAME',
  'SHELL',
  'LANG',
  'LANGUAGE',
  'LC_ALL',
  'LC_CTYPE',
  'LC_MESSAGES',
  'TZ',
  'TMPDIR',
  'WL_API_URL',
  'WL_SIM_HEARTBEAT_MS',
] as const;

/** The box's log of the deliveries, removals, restarts and stops that did work. */
export const BOX_EVENTS_FILE = 'box-events.log';
/** The runtime's output. */
export const RUNTIME_LOG_FILE = 'runtime.log';
/** The most bytes of /proc/<pid>/environ read to tell whether a process is the box's runtime. */
const MAX_ENVIRON_BYTES = 1024 * 1024;

/** A delivered plugin's revision, in its folder. */
export const REVISION_FILE = '.revision';
/**
 * A delivery in progress is copied to `<plugin>.incoming` beside the plugin, then swapped in
 * whole; a removal renames the plugin to `<plugin>.removing` first, so it leaves the box whole.
 */
export { INCOMING_SUFFIX, REMOVING_SUFFIX };
/** Folders in the plugins directory that are not plugins: a delivery or a removal under way. */
export function isTransientPluginDir(name: string): boolean {
  return name.startsWith('.') || name.endsWith(INCOMING_SUFFIX) || name.endsWith(REMOVING_SUFFIX);
}
/** The runtime's process id and the id of the launch that started it, in the box. */
export const RUNTIME_PID_FILE = 'runtime.pid';
/** The launch id of a box's first start (restarts carry the workflow's restart id). */
export const BOOT_LAUNCH_ID = 'boot';
/** How long a stopped runtime may drain before it is killed. */
const RUNTIME_STOP_GRACE_MS = 5_000;
/** How long a launch waits for the new runtime to record itself. */
const LAUNCH_TIMEOUT_MS = 10_000;

/**
 * Records the launch, then becomes the runtime (`exec` keeps the process id). Arguments: the
 * runtime's program and arguments; environment: the launch id and the box event line; descriptor
 * 3: the box's event log, 4: `runtime.pid.tmp` created new, both opened by the driver. The record
 * is renamed over `runtime.pid` unless a link or folder was put there since the driver looked.
 */
const LAUNCH_WRAPPER =
  'command -v "$1" >/dev/null 2>&1 || { echo "runtime program not found: $1" >&2; exit 127; }; ' +
  '{ [ -z "$WL_LAUNCH_EVENT" ] || printf "%s %s\\n" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$WL_LAUNCH_EVENT" >&3; } && ' +
  'printf "%s %s\\n" "$$" "$WL_LAUNCH_ID" >&4 && ' +
  '{ [ ! -L runtime.pid ] && [ ! -d runtime.pid ] || { echo "runtime.pid is a link or a folder: remove it" >&2; exit 126; }; } && ' +
  'mv -f runtime.pid.tmp runtime.pid && exec "$@" 3>&- 4>&-';

export interface RuntimeRecord {
  pid: number;
  launchId: string;
}

/** Where a box's plugins live, in the box: `configs/plugins/<name>/`. */
const PLUGINS_PATH = 'configs/plugins';

/** Where a box's plugins live: `<box>/configs/plugins/<name>/`. */
export function boxPluginsDir(boxDir: string): string {
  return join(boxDir, PLUGINS_PATH);
}

export class LocalBoxDriver implements BoxDriver {
  constructor(private readonly settings: LocalBoxSettings) {}

  boxDir(workspaceId: string): string {
    return join(this.settings.root, workspaceId);
  }

  /** Creates the box directory (what provisioning a local box amounts to). */
  async createBox(workspaceId: string): Promise<string> {
    const dir = this.boxDir(workspaceId);
    await mkdir(dir, { recursive: true });
    await (await this.requireBox(workspaceId)).folders(PLUGINS_PATH, true);
    return dir;
  }

  async readPluginManifest(workspaceId: string, pluginName: string): Promise<string | null> {
    assertSafePluginName(pluginName, 'plugin name');
    const box = await this.requireBox(workspaceId);
    return box.read(`${PLUGINS_PATH}/${pluginName}/${MANIFEST_FILE}`, MAX_MANIFEST_BYTES, 'a plugin manifest');
  }

  async listPlugins(workspaceId: string): Promise<BoxPlugin[]> {
    const box = await this.requireBox(workspaceId);
    if (!(await box.folders(PLUGINS_PATH))) return [];
    const plugins: BoxPlugin[] = [];
    let bytes = 0;
    // One entry at a time, and capped as a whole: a box of a million plugins is refused, never held.
    for await (const entry of await opendir(join(box.root, PLUGINS_PATH))) {
      if (isTransientPluginDir(entry.name)) continue;
      const path = `${PLUGINS_PATH}/${entry.name}`;
      if (entry.isSymbolicLink()) throw box.unsafe(path, 'a symbolic link', 'a plugin folder');
      if (!entry.isDirectory()) continue;
      // Only a missing file means absent: a read that failed is the listing's failure, never a
      // reason to deliver again.
      const manifest = await box.read(`${path}/${MANIFEST_FILE}`, MAX_MANIFEST_BYTES, 'a plugin manifest');
      if (manifest === null) continue;
      const revision = await box.read(`${path}/${REVISION_FILE}`, MAX_RECORD_BYTES, 'a recorded revision');
      bytes += Buffer.byteLength(entry.name) + Buffer.byteLength(manifest) + Buffer.byteLength(revision ?? '');
      if (bytes > MAX_LISTING_BYTES)
        throw permanentBoxError(
          'BoxOutputTooLarge',
          `box of workspace ${workspaceId}: its plugins hold more than ${MAX_LISTING_BYTES} bytes of manifests ` +
            `and revisions, the cap for a plugin listing: remove the plugins it should not hold (${join(box.root, PLUGINS_PATH)})`,
        );
      plugins.push({ name: entry.name, manifest, revision });
    }
    return plugins.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async removePlugin(workspaceId: string, pluginName: string): Promise<'removed' | 'already-absent'> {
    assertSafePluginName(pluginName, 'plugin name');
    const box = await this.requireBox(workspaceId);
    if (!(await box.folders(PLUGINS_PATH))) return 'already-absent';
    const target = join(box.root, PLUGINS_PATH, pluginName);
    const removing = `${target}${REMOVING_SUFFIX}`;
    // A link is taken away itself (rename and rm never follow one), never what it leads to.
    const present = (await box.entry(`${PLUGINS_PATH}/${pluginName}`)) !== null;
    // Renamed away first (one step), so the runtime never loads half a plugin; then deleted.
    if (present) {
      await rm(removing, { recursive: true, force: true });
      await rename(target, removing);
    }
    await rm(removing, { recursive: true, force: true });
    if (!present) return 'already-absent';
    await this.event(box, `remove ${pluginName}`);
    return 'removed';
  }

  async writeBootCredential(workspaceId: string, credential: string): Promise<void> {
    const box = await this.requireBox(workspaceId);
    // Written beside, private from its creation, then swapped in: the runtime never reads half a credential.
    await box.writeWhole(BOOT_CREDENTIAL_FILE, `${credential}\n`, 0o600);
  }

  async deliverPlugin(workspaceId: string, plugin: StagedPlugin): Promise<'delivered' | 'already-present'> {
    assertSafePluginName(plugin.pluginName, 'plugin name');
    // The staged tree is checked again before a byte of it enters the box.
    const tree = await inspectTree(plugin.path, `staged plugin ${plugin.pluginName} at ${plugin.path}`);
    const box = await this.requireBox(workspaceId);
    await box.folders(PLUGINS_PATH, true);
    const path = `${PLUGINS_PATH}/${plugin.pluginName}`;
    const found = await box.entry(path);
    if (found !== null && !found.isDirectory() && !found.isFile())
      throw box.unsafe(path, describeEntry(found), 'a plugin folder');
    // Present means what a listing counts: the manifest there too, not a folder emptied by hand.
    const manifest = found?.isDirectory() ? await box.entry(`${path}/${MANIFEST_FILE}`) : null;
    const current = manifest?.isFile()
      ? await box.read(`${path}/${REVISION_FILE}`, MAX_RECORD_BYTES, 'a recorded revision')
      : null;
    if (current === plugin.revision) return 'already-present';

    // Copied into a folder the driver creates, then swapped in, so the box never sees a
    // half-written plugin; the revision is recorded in that folder, in a file created new.
    const target = join(box.root, path);
    const incoming = `${target}${INCOMING_SUFFIX}`;
    await rm(incoming, { recursive: true, force: true });
    await copyTree(plugin.path, incoming, tree, `staged plugin ${plugin.pluginName}`, (file) => file === REVISION_FILE);
    const record = await box.create(`${path}${INCOMING_SUFFIX}/${REVISION_FILE}`);
    try {
      await record.writeFile(plugin.revision);
    } finally {
      await record.close();
    }
    await rm(target, { recursive: true, force: true });
    await rename(incoming, target);
    await this.event(box, `deliver ${plugin.pluginName} ${plugin.revision}`);
    return 'delivered';
  }

  async restart(workspaceId: string, restartId: string): Promise<'restarted' | 'already-restarted'> {
    const box = await this.requireBox(workspaceId);
    if ((await this.runtimeRecord(workspaceId))?.launchId === restartId) return 'already-restarted';
    // The log the launch appends to, checked before the runtime is stopped: a refused restart stops nothing.
    if (this.settings.runtimeCommand !== null) await box.expectFileOrNothing(RUNTIME_LOG_FILE);
    await this.stopRuntime(workspaceId);
    await this.launch(workspaceId, restartId, `restart ${restartId}`);
    return 'restarted';
  }

  async isRunning(workspaceId: string): Promise<boolean> {
    await this.requireBox(workspaceId);
    return (await this.liveRuntimePid(workspaceId)) !== null;
  }

  /**
   * The pid of the box's runtime if that process lives and is the one the record names (its
   * environment carries the launch id), so a pid the system reused for another process after
   * the runtime died is never taken for it, nor signalled.
   */
  async liveRuntimePid(workspaceId: string): Promise<number | null> {
    const record = await this.runtimeRecord(workspaceId);
    if (record === null || record.pid === 0 || !(await processRunning(record.pid))) return null;
    if (record.launchId === '') return record.pid; // a record from before launch ids: trusted as before
    const environ = await readEnviron(record.pid);
    // No /proc to look in (not Linux): the pid is all there is to go by.
    if (environ === null) return record.pid;
    return environ.split('\0').includes(`WL_LAUNCH_ID=${record.launchId}`) ? record.pid : null;
  }

  async stop(workspaceId: string): Promise<'stopped' | 'already-stopped'> {
    if (!(await this.stopRuntime(workspaceId))) return 'already-stopped';
    await this.event(await this.requireBox(workspaceId), 'stop');
    return 'stopped';
  }

  /** Starts the runtime if it is not running (first boot of a local box). */
  async startRuntime(workspaceId: string): Promise<void> {
    if (this.settings.runtimeCommand === null || (await this.isRunning(workspaceId))) return;
    await this.launch(workspaceId, BOOT_LAUNCH_ID, '');
  }

  /**
   * Starts the runtime through the launch wrapper and waits until it has recorded itself.
   * Without a runtime command the launch is only recorded.
   */
  private async launch(workspaceId: string, launchId: string, event: string): Promise<void> {
    const box = await this.requireBox(workspaceId);
    const command = this.settings.runtimeCommand;
    if (command === null || command.length === 0) {
      await box.writeWhole(RUNTIME_PID_FILE, `0 ${launchId}\n`);
      if (event !== '') await this.event(box, event);
      return;
    }
    await box.expectFileOrNothing(RUNTIME_PID_FILE);
    const opened: FileHandle[] = [];
    let child: ReturnType<typeof spawn>;
    try {
      const logFile = await box.openForAppend(RUNTIME_LOG_FILE);
      opened.push(logFile);
      const eventsFile = event === '' ? null : await box.openForAppend(BOX_EVENTS_FILE);
      if (eventsFile !== null) opened.push(eventsFile);
      const record = await box.create(`${RUNTIME_PID_FILE}.tmp`);
      opened.push(record);
      child = spawn('/bin/sh', ['-c', LAUNCH_WRAPPER, 'runtime', ...command], {
        cwd: box.root,
        detached: true,
        stdio: ['ignore', logFile.fd, logFile.fd, eventsFile?.fd ?? 'ignore', record.fd],
        env: this.runtimeEnvironment(workspaceId, launchId, event),
      });
    } finally {
      for (const file of opened) await file.close();
    }
    child.unref();
    const pid = child.pid;
    if (pid === undefined) throw new Error(`could not start runtime for box ${workspaceId}: ${command.join(' ')}`);
    // Set by the exit handler while the loop below awaits (an object, so the checker sees it change).
    const exited: { code: number | null } = { code: null };
    child.once('exit', (code) => (exited.code = code ?? -1));
    const deadline = Date.now() + LAUNCH_TIMEOUT_MS;
    while ((await this.runtimeRecord(workspaceId))?.pid !== pid) {
      if (exited.code !== null)
        throw new Error(
          `runtime for box ${workspaceId} exited at once (code ${exited.code}; see runtime.log): ${command.join(' ')}`,
        );
      if (Date.now() > deadline)
        throw new Error(
          `runtime for box ${workspaceId} did not start within ${LAUNCH_TIMEOUT_MS} ms: ${command.join(' ')}`,
        );
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** What a runtime's environment holds: the allowed part of this process's, `runtimeEnv`, and the launch's own. */
  private runtimeEnvironment(workspaceId: string, launchId: string, event: string): NodeJS.ProcessEnv {
    const allowed = RUNTIME_ENV_ALLOWED.flatMap((name) => {
      const value = process.env[name];
      return value === undefined ? [] : [[name, value] as const];
    });
    return {
      ...Object.fromEntries(allowed),
      ...this.settings.runtimeEnv,
      WORKSPACE_ID: workspaceId,
      WORKSPACE_DIR: this.boxDir(workspaceId),
      WL_LAUNCH_ID: launchId,
      WL_LAUNCH_EVENT: event,
    };
  }

  /** Stops the box's runtime if it runs; whether there was one to stop. */
  async stopRuntime(workspaceId: string): Promise<boolean> {
    const pid = await this.liveRuntimePid(workspaceId);
    if (pid === null) return false;
    await stopProcess(pid, RUNTIME_STOP_GRACE_MS);
    return true;
  }

  private folder(workspaceId: string): BoxFolder {
    return new BoxFolder(this.boxDir(workspaceId), workspaceId);
  }

  /**
   * The box's folder, which must be there as a real folder; its event log, which every change
   * appends to, is checked first, so an operation refused for it has changed nothing.
   */
  private async requireBox(workspaceId: string): Promise<BoxFolder> {
    const dir = this.boxDir(workspaceId);
    const found = await lstat(dir).catch(() => null);
    if (found === null || !(found.isDirectory() || found.isSymbolicLink()))
      throw new BoxUnavailableError(`box ${workspaceId} not found at ${dir}`);
    const box = this.folder(workspaceId);
    if (!found.isDirectory()) throw box.unsafe('.', describeEntry(found), 'the box folder');
    await box.expectFileOrNothing(BOX_EVENTS_FILE);
    return box;
  }

  /** The process id of the box's runtime as last started (it may have died since); null if none. */
  async runtimePid(workspaceId: string): Promise<number | null> {
    const pid = (await this.runtimeRecord(workspaceId))?.pid ?? 0;
    return pid > 0 ? pid : null;
  }

  /** The last launch's record: its process id (0 without a runtime) and launch id; null before the first. */
  async runtimeRecord(workspaceId: string): Promise<RuntimeRecord | null> {
    const text = await this.folder(workspaceId).read(RUNTIME_PID_FILE, MAX_RECORD_BYTES, 'a process record');
    const [pidText = '', launchId = ''] = (text ?? '').trim().split(/\s+/);
    const pid = Number(pidText);
    return Number.isInteger(pid) && pid >= 0 && pidText !== '' ? { pid, launchId } : null;
  }

  private async event(box: BoxFolder, line: string): Promise<void> {
    await box.append(BOX_EVENTS_FILE, `${new Date().toISOString()} ${line}\n`);
  }
}

/** The environment of process `pid` (at most MAX_ENVIRON_BYTES, else empty); null where there is no /proc. */
async function readEnviron(pid: number): Promise<string | null> {
  let file: FileHandle;
  try {
    file = await open(`/proc/${pid}/environ`, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // ESRCH: the process has exited and only waits to be reaped (its parent, e.g. an init that
    // does not reap, has not yet): it runs no more.
    if (code === 'ESRCH') return '';
    return code === 'ENOENT' && existsSync('/proc/self') ? '' : null;
  }
  try {
    return (await readCapped(file, MAX_ENVIRON_BYTES)) ?? '';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return '';
    throw err;
  } finally {
    await file.close();
  }
}

/** How long a killed process may take to be gone before stopping it counts as failed. */
const KILL_WAIT_MS = 5_000;

/**
 * SIGTERM, then SIGKILL if the process still runs after `graceMs`; returns once it runs no more,
 * so whoever asks next is not told it still runs.
 */
export async function stopProcess(pid: number, graceMs: number): Promise<void> {
  if (!signal(pid, 'SIGTERM')) return;
  if (await waitUntilStopped(pid, graceMs)) return;
  signal(pid, 'SIGKILL');
  if (!(await waitUntilStopped(pid, KILL_WAIT_MS)))
    throw new Error(`process ${pid} still runs ${KILL_WAIT_MS} ms after SIGKILL`);
}

/** Sends `name` to `pid`; false if there is no such process. */
function signal(pid: number, name: NodeJS.Signals): boolean {
  try {
    process.kill(pid, name);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

async function waitUntilStopped(pid: number, waitMs: number): Promise<boolean> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    if (!(await processRunning(pid))) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Whether the process runs: it exists and has not exited. A process that exited but was not yet
 * reaped by its parent (state Z) still answers signal 0, and runs no more.
 */
export async function processRunning(pid: number): Promise<boolean> {
  if (!processAlive(pid)) return false;
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    // Gone between the two looks, or no /proc (not Linux): signal 0 is all there is to go by.
    return processAlive(pid) && !existsSync('/proc/self');
  }
  // "pid (comm) S ...": the name may hold spaces and parentheses, the state follows the last ')'.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

/** Whether a process with this id exists (signal 0). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
