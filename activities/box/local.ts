/**
 * The local box driver: each workspace's box is a directory `<root>/<workspaceId>/` with its
 * plugins under `configs/plugins/<name>/`, plus an optional managed runtime process (restart =
 * stop and start it; is-running = the process is alive). It makes the whole system runnable
 * on one machine. `box-events.log` in the box records each delivery and restart that did work.
 */
import { spawn } from 'node:child_process';
import { appendFile, cp, mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MANIFEST_FILE, type StagedPlugin } from '../plugins/stage.js';
import { BoxUnavailableError, type BoxDriver } from './driver.js';

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
/** A delivery in progress is copied to `<plugin>.incoming` beside the plugin, then swapped in whole. */
export const INCOMING_SUFFIX = '.incoming';
/** The runtime's process id, in the box. */
export const RUNTIME_PID_FILE = 'runtime.pid';

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

  async deliverPlugin(workspaceId: string, plugin: StagedPlugin): Promise<'delivered' | 'already-present'> {
    await this.requireBox(workspaceId);
    const target = join(this.pluginsDir(workspaceId), plugin.pluginName);
    const current = await readFile(join(target, REVISION_FILE), 'utf8').catch(() => null);
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
    const dir = await this.requireBox(workspaceId);
    const last = await readFile(join(dir, 'last-restart'), 'utf8').catch(() => null);
    if (last === restartId) return 'already-restarted';
    await this.stopRuntime(workspaceId);
    await this.startRuntime(workspaceId);
    await writeFile(join(dir, 'last-restart'), restartId);
    await this.event(workspaceId, `restart ${restartId}`);
    return 'restarted';
  }

  async isRunning(workspaceId: string): Promise<boolean> {
    await this.requireBox(workspaceId);
    const pid = await this.runtimePid(workspaceId);
    return pid !== null && processAlive(pid);
  }

  /** Starts the runtime if it is not running (first boot of a local box). */
  async startRuntime(workspaceId: string): Promise<void> {
    const command = this.settings.runtimeCommand;
    if (command === null || (await this.isRunning(workspaceId))) return;
    const [program, ...args] = command;
    if (program === undefined) return;
    const dir = this.boxDir(workspaceId);
    const logFile = await open(join(dir, 'runtime.log'), 'a');
    const child = spawn(program, args, {
      cwd: dir,
      detached: true,
      stdio: ['ignore', logFile.fd, logFile.fd],
      env: { ...process.env, ...this.settings.runtimeEnv, WORKSPACE_ID: workspaceId, WORKSPACE_DIR: dir },
    });
    child.unref();
    await logFile.close();
    if (child.pid === undefined)
      throw new Error(`could not start runtime for box ${workspaceId}: ${command.join(' ')}`);
    await writeFile(join(dir, RUNTIME_PID_FILE), String(child.pid));
  }

  async stopRuntime(workspaceId: string): Promise<void> {
    const pid = await this.runtimePid(workspaceId);
    if (pid === null || !processAlive(pid)) return;
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 50 && processAlive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 100));
    if (processAlive(pid)) process.kill(pid, 'SIGKILL');
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
    const text = await readFile(join(this.boxDir(workspaceId), RUNTIME_PID_FILE), 'utf8').catch(() => null);
    const pid = text === null ? NaN : Number(text);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  }

  private async event(workspaceId: string, line: string): Promise<void> {
    await appendFile(join(this.boxDir(workspaceId), 'box-events.log'), `${new Date().toISOString()} ${line}\n`);
  }
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
