/**
 * The local box driver: each workspace's box is a directory `<root>/<workspaceId>/` with its
 * plugins under `configs/plugins/<name>/`, plus an optional managed runtime process (restart =
 * stop and start it; is-running = the process is alive). It makes the whole system runnable
 * on one machine. `box-events.log` in the box records each delivery and restart that did work.
 *
 * A restart is recorded by the runtime it starts: a small shell wrapper writes the box event and
 * `runtime.pid` ("<pid> <launch id>"), then execs the runtime. So the record and the
 * launch cannot be told apart by a crash of the worker: a retried restart whose id the record
 * already names was done, and is not done twice.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, chmod, cp, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { INCOMING_SUFFIX, REMOVING_SUFFIX } from '../plugins/errors.js';
import { MANIFEST_FILE, type StagedPlugin } from '../plugins/stage.js';
import { BOOT_CREDENTIAL_FILE, BoxUnavailableError, type BoxDriver, type BoxPlugin } from './driver.js';

export interface LocalBoxSettings {
  root: string;
  /** The runtime to manage in each box, e.g. ['node', 'runtime.js']; none = no process. */
  runtimeCommand: string[] | null;
  /**
   * Variables the runtime gets on top of this process's environment (read when it starts), e.g.
   * `WL_API_URL` for the simulated runtime.
   */
  runtimeEnv?: Record<string, string>;
}

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
 * runtime's program and arguments; environment: the launch id and the box event line.
 */
const LAUNCH_WRAPPER =
  'command -v "$1" >/dev/null 2>&1 || { echo "runtime program not found: $1" >&2; exit 127; }; ' +
  '{ [ -z "$WL_LAUNCH_EVENT" ] || printf "%s %s\\n" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$WL_LAUNCH_EVENT" >> box-events.log; } && ' +
  'printf "%s %s\\n" "$$" "$WL_LAUNCH_ID" > runtime.pid.tmp && mv -f runtime.pid.tmp runtime.pid && ' +
  'exec "$@"';

export interface RuntimeRecord {
  pid: number;
  launchId: string;
}

/** Where a box's plugins live: `<box>/configs/plugins/<name>/`. */
export function boxPluginsDir(boxDir: string): string {
  return join(boxDir, 'configs', 'plugins');
}

export class LocalBoxDriver implements BoxDriver {
  constructor(private readonly settings: LocalBoxSettings) {}

  boxDir(workspaceId: string): string {
    return join(this.settings.root, workspaceId);
  }

  /** Creates the box directory (what provisioning a local box amounts to). */
  async createBox(workspaceId: string): Promise<string> {
    const dir = this.boxDir(workspaceId);
    await mkdir(boxPluginsDir(dir), { recursive: true });
    return dir;
  }

  async readPluginManifest(workspaceId: string, pluginName: string): Promise<string | null> {
    await this.requireBox(workspaceId);
    try {
      return await readFile(join(this.pluginsDir(workspaceId), pluginName, MANIFEST_FILE), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  async listPlugins(workspaceId: string): Promise<BoxPlugin[]> {
    await this.requireBox(workspaceId);
    const dir = this.pluginsDir(workspaceId);
    const entries = await readdir(dir, { withFileTypes: true }).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    });
    const plugins: BoxPlugin[] = [];
    for (const entry of entries) {
      if (!entry.isDirectory() || isTransientPluginDir(entry.name)) continue;
      // Only a missing file means absent: a read that failed is the listing's failure, never a
      // reason to deliver again.
      const manifest = await readIfPresent(join(dir, entry.name, MANIFEST_FILE));
      if (manifest === null) continue;
      const revision = await readIfPresent(join(dir, entry.name, REVISION_FILE));
      plugins.push({ name: entry.name, manifest, revision });
    }
    return plugins.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async removePlugin(workspaceId: string, pluginName: string): Promise<'removed' | 'already-absent'> {
    await this.requireBox(workspaceId);
    const target = join(this.pluginsDir(workspaceId), pluginName);
    const removing = `${target}${REMOVING_SUFFIX}`;
    const present = existsSync(target);
    // Renamed away first (one step), so the runtime never loads half a plugin; then deleted.
    if (present) {
      await rm(removing, { recursive: true, force: true });
      await rename(target, removing);
    }
    await rm(removing, { recursive: true, force: true });
    if (!present) return 'already-absent';
    await this.event(workspaceId, `remove ${pluginName}`);
    return 'removed';
  }

  async writeBootCredential(workspaceId: string, credential: string): Promise<void> {
    const dir = await this.requireBox(workspaceId);
    const file = join(dir, BOOT_CREDENTIAL_FILE);
    // Written beside, made private, then swapped in: the runtime never reads half a credential.
    await writeFile(`${file}.tmp`, `${credential}\n`, { mode: 0o600 });
    await chmod(`${file}.tmp`, 0o600);
    await rename(`${file}.tmp`, file);
  }

  async deliverPlugin(workspaceId: string, plugin: StagedPlugin): Promise<'delivered' | 'already-present'> {
    await this.requireBox(workspaceId);
    const target = join(this.pluginsDir(workspaceId), plugin.pluginName);
    // Present means what a listing counts: the manifest there too, not a folder emptied by hand.
    const current = existsSync(join(target, MANIFEST_FILE))
      ? await readFile(join(target, REVISION_FILE), 'utf8').catch(() => null)
      : null;
    if (current === plugin.revision) return 'already-present';

    // Copy beside the target, then swap it in, so the box never sees a half-written plugin.
    const incoming = `${target}${INCOMING_SUFFIX}`;
    await rm(incoming, { recursive: true, force: true });
    await cp(plugin.path, incoming, { recursive: true });
    await writeFile(join(incoming, REVISION_FILE), plugin.revision);
    await rm(target, { recursive: true, force: true });
    await rename(incoming, target);
    await this.event(workspaceId, `deliver ${plugin.pluginName} ${plugin.revision}`);
    return 'delivered';
  }

  async restart(workspaceId: string, restartId: string): Promise<'restarted' | 'already-restarted'> {
    await this.requireBox(workspaceId);
    if ((await this.runtimeRecord(workspaceId))?.launchId === restartId) return 'already-restarted';
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
    if (record === null || record.pid === 0 || !processAlive(record.pid)) return null;
    if (record.launchId === '') return record.pid; // a record from before launch ids: trusted as before
    const environ = await readFile(`/proc/${record.pid}/environ`, 'utf8').catch((err: unknown) => {
      const code = (err as NodeJS.ErrnoException).code;
      // ESRCH: the process has exited and only waits to be reaped (its parent, e.g. an init that
      // does not reap, has not yet): it runs no more.
      if (code === 'ESRCH') return '';
      return code === 'ENOENT' && existsSync('/proc/self') ? '' : null;
    });
    // No /proc to look in (not Linux): the pid is all there is to go by.
    if (environ === null) return record.pid;
    return environ.split('\0').includes(`WL_LAUNCH_ID=${record.launchId}`) ? record.pid : null;
  }

  async stop(workspaceId: string): Promise<'stopped' | 'already-stopped'> {
    if (!(await this.stopRuntime(workspaceId))) return 'already-stopped';
    await this.event(workspaceId, 'stop');
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
    const dir = this.boxDir(workspaceId);
    const command = this.settings.runtimeCommand;
    if (command === null || command.length === 0) {
      await writeFile(join(dir, `${RUNTIME_PID_FILE}.tmp`), `0 ${launchId}\n`);
      await rename(join(dir, `${RUNTIME_PID_FILE}.tmp`), join(dir, RUNTIME_PID_FILE));
      if (event !== '') await this.event(workspaceId, event);
      return;
    }
    const logFile = await open(join(dir, 'runtime.log'), 'a');
    const child = spawn('/bin/sh', ['-c', LAUNCH_WRAPPER, 'runtime', ...command], {
      cwd: dir,
      detached: true,
      stdio: ['ignore', logFile.fd, logFile.fd],
      env: {
        ...process.env,
        ...this.settings.runtimeEnv,
        WORKSPACE_ID: workspaceId,
        WORKSPACE_DIR: dir,
        WL_LAUNCH_ID: launchId,
        WL_LAUNCH_EVENT: event,
      },
    });
    child.unref();
    await logFile.close();
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

  /** Stops the box's runtime if it runs; whether there was one to stop. */
  async stopRuntime(workspaceId: string): Promise<boolean> {
    const pid = await this.liveRuntimePid(workspaceId);
    if (pid === null) return false;
    await stopProcess(pid, RUNTIME_STOP_GRACE_MS);
    return true;
  }

  private pluginsDir(workspaceId: string): string {
    return boxPluginsDir(this.boxDir(workspaceId));
  }

  private async requireBox(workspaceId: string): Promise<string> {
    const dir = this.boxDir(workspaceId);
    const found = await stat(dir).then(
      (s) => s.isDirectory(),
      () => false,
    );
    if (!found) throw new BoxUnavailableError(`box ${workspaceId} not found at ${dir}`);
    return dir;
  }

  /** The process id of the box's runtime as last started (it may have died since); null if none. */
  async runtimePid(workspaceId: string): Promise<number | null> {
    const pid = (await this.runtimeRecord(workspaceId))?.pid ?? 0;
    return pid > 0 ? pid : null;
  }

  /** The last launch's record: its process id (0 without a runtime) and launch id; null before the first. */
  async runtimeRecord(workspaceId: string): Promise<RuntimeRecord | null> {
    const text = await readFile(join(this.boxDir(workspaceId), RUNTIME_PID_FILE), 'utf8').catch(() => null);
    const [pidText = '', launchId = ''] = (text ?? '').trim().split(/\s+/);
    const pid = Number(pidText);
    return Number.isInteger(pid) && pid >= 0 && pidText !== '' ? { pid, launchId } : null;
  }

  private async event(workspaceId: string, line: string): Promise<void> {
    await appendFile(join(this.boxDir(workspaceId), 'box-events.log'), `${new Date().toISOString()} ${line}\n`);
  }
}

/** The file's text; null when it does not exist. */
async function readIfPresent(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** SIGTERM, then SIGKILL if the process is still there after `graceMs`. */
export async function stopProcess(pid: number, graceMs: number): Promise<void> {
  process.kill(pid, 'SIGTERM');
  for (let waited = 0; waited < graceMs && processAlive(pid); waited += 100)
    await new Promise((resolve) => setTimeout(resolve, 100));
  if (processAlive(pid)) process.kill(pid, 'SIGKILL');
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
