/**
 * The simulator's `--ssh`: its boxes stay the local box folders, but the worker reaches them over
 * SSH, through a throwaway sshd on a loopback port (scripts/sshd.ts) with a fresh host key,
 * logging in as this user with a fresh client key put in the worker's key directory. Each box
 * gets `box-runtime.sh`, which its SSH settings' restart, running and stop commands run: it
 * starts the simulated runtime in the background with the environment the local driver gives it
 * and records it in `runtime.pid` as "<pid> <launch id>", as the local driver does, so the
 * simulator's kill and the local driver's checks read it unchanged.
 */
import { spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { q, SshBoxDriver } from '../activities/box/ssh.js';
import { sshSettingsFromBody, type SshBoxBody, type SshBoxSettings } from '../activities/box/ssh-settings.js';
import { keygen, SSHD_PATH, startThrowawaySshd, type ThrowawaySshd } from '../scripts/sshd.js';
import { describeError } from './http.js';
import { projectPath } from '../project.js';

/** The script in each box that the SSH settings' commands run. */
export const BOX_RUNTIME_SCRIPT = 'box-runtime.sh';

export interface SimulatedSshOptions {
  runId: string;
  /** The throwaway sshd's files go under `<dir>/sshd-<run>`. */
  dir: string;
  /** The worker's key directory (`WL_SSH_KEY_DIR`, or `<data dir>/ssh-keys`). */
  keyDir: string;
  apiUrl: string;
  runtimeCommand: string[];
  /** Passed to the runtimes as `WL_SIM_HEARTBEAT_MS` when set. */
  heartbeatMs?: number;
  log: (line: string) => void;
}

export class SimulatedSshBoxes {
  readonly keyRef: string;
  readonly keyFile: string;
  readonly user = userInfo().username;
  /** The simulator's own client: the first boot of each box goes over SSH too. */
  readonly driver: SshBoxDriver;
  private readonly settings = new Map<string, SshBoxSettings>();

  private constructor(
    private readonly options: SimulatedSshOptions,
    readonly sshd: ThrowawaySshd,
    readonly dir: string,
    keyRef: string,
  ) {
    this.keyRef = keyRef;
    this.keyFile = join(options.keyDir, keyRef);
    this.driver = new SshBoxDriver({
      resolve: (workspaceId) => Promise.resolve(this.settings.get(workspaceId) ?? null),
      keyDir: options.keyDir,
    });
  }

  /**
   * Makes sure OpenSSH is installed (`scripts/sshd.sh` when it is not), makes the client key in
   * the worker's key directory and starts the sshd that authorizes it.
   */
  static async start(options: SimulatedSshOptions): Promise<SimulatedSshBoxes> {
    await ensureOpenSsh(options.log);
    const dir = join(options.dir, `sshd-${options.runId}`);
    const keyRef = `simulator-${options.runId}`;
    const keyFile = join(options.keyDir, keyRef);
    await mkdir(options.keyDir, { recursive: true, mode: 0o700 });
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true, mode: 0o700 });
    let clientKey: string;
    try {
      clientKey = keygen(keyFile, `workspace-lifecycle simulator ${options.runId}`);
      // ssh refuses a private key others can read; ssh-keygen makes it so, this makes sure.
      await chmod(keyFile, 0o600);
      // Only the private half belongs in the key directory.
      await rm(`${keyFile}.pub`, { force: true });
    } catch (err) {
      await rm(keyFile, { force: true });
      await rm(`${keyFile}.pub`, { force: true });
      throw new Error(`could not make the client key ${keyFile}: ${describeError(err)}`);
    }
    try {
      const sshd = await startThrowawaySshd({ dir, authorizedKeys: [clientKey] });
      return new SimulatedSshBoxes(options, sshd, dir, keyRef);
    } catch (err) {
      await rm(keyFile, { force: true });
      await rm(dir, { recursive: true, force: true });
      throw new Error(`could not start the throwaway sshd: ${describeError(err)}`);
    }
  }

  /**
   * The settings for `PUT /workspaces/:id/box`: the box's root is its local folder, as the host
   * is this machine. Set before the folder exists, so no box operation of the worker takes the
   * local driver meanwhile (until the folder exists, both drivers find no box and retry).
   */
  settingsFor(workspaceId: string, boxDir: string): SshBoxBody {
    const run = (action: string): string => `/bin/sh ./${BOX_RUNTIME_SCRIPT} ${action}`;
    const body: SshBoxBody = {
      driver: 'ssh',
      host: '127.0.0.1',
      port: this.sshd.port,
      user: this.user,
      key_ref: this.keyRef,
      host_key: this.sshd.hostKey,
      root: boxDir,
      restart_command: run('restart'),
      running_command: run('running'),
      stop_command: run('stop'),
    };
    this.settings.set(workspaceId, sshSettingsFromBody(body));
    return body;
  }

  /** Writes the box's `box-runtime.sh`, which the commands of its settings run. */
  async provision(workspaceId: string, boxDir: string): Promise<void> {
    await writeFile(
      join(boxDir, BOX_RUNTIME_SCRIPT),
      boxRuntimeScript({
        workspaceId,
        boxDir,
        apiUrl: this.options.apiUrl,
        runtimeCommand: this.options.runtimeCommand,
        ...(this.options.heartbeatMs === undefined ? {} : { heartbeatMs: this.options.heartbeatMs }),
      }),
      { mode: 0o700 },
    );
  }

  /** Logins the sshd accepted so far. */
  async logins(): Promise<number> {
    const text = await readFile(this.sshd.log, 'utf8').catch(() => '');
    return (text.match(/Accepted publickey/g) ?? []).length;
  }

  /** Stops the sshd and deletes the client key and the sshd's files; one line per thing that failed. */
  async close(): Promise<string[]> {
    const problems: string[] = [];
    await this.driver.close().catch(() => undefined);
    try {
      await this.sshd.stop();
    } catch (err) {
      problems.push(`stopping the sshd (pid ${this.sshd.pid}) failed: ${describeError(err)}`);
    }
    for (const path of [this.keyFile, this.dir]) {
      try {
        await rm(path, { recursive: true, force: true });
      } catch (err) {
        problems.push(`deleting ${path} failed: ${describeError(err)}`);
      }
    }
    return problems;
  }

  /**
   * The last resort when the simulator dies without its cleanup (an uncaught error): stops the
   * sshd and deletes the key and its files at once, so neither outlives it.
   */
  abandon(): void {
    try {
      process.kill(this.sshd.pid, 'SIGTERM');
    } catch {
      // already gone
    }
    rmSync(this.keyFile, { force: true });
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** `--keep`: ends only the simulator's own connections; the sshd and the key stay for the worker. */
  async leave(): Promise<void> {
    await this.driver.close().catch(() => undefined);
  }
}

/** Installs OpenSSH with `scripts/sshd.sh` when its server or client is missing. */
async function ensureOpenSsh(log: (line: string) => void): Promise<void> {
  const onPath = (program: string): boolean =>
    (process.env['PATH'] ?? '').split(':').some((dir) => dir !== '' && existsSync(join(dir, program)));
  if (existsSync(SSHD_PATH) && onPath('ssh') && onPath('ssh-keygen')) return;
  const script = projectPath('scripts', 'sshd.sh');
  log(`--ssh: OpenSSH (server or client) is missing: installing it with bash ${script}`);
  const code = await new Promise<number>((resolve) => {
    const child = spawn('bash', [script], { stdio: ['ignore', 'inherit', 'inherit'] });
    child.once('error', () => resolve(-1));
    child.once('exit', (exitCode) => resolve(exitCode ?? -1));
  });
  if (code !== 0 || !existsSync(SSHD_PATH))
    throw new Error(`OpenSSH is missing and bash ${script} could not install it (exit ${code}): install it and retry`);
}

/**
 * The box's runtime control, run by `/bin/sh` in the box over SSH: `restart` stops the runtime
 * `runtime.pid` names and starts a new one in the background; `running` exits 0 while it runs, 1
 * when not; `stop` stops it. A recorded pid counts only while that process carries the recorded
 * launch id in its environment, so a reused pid, or a killed runtime nobody reaped yet, is not it.
 */
export function boxRuntimeScript(options: {
  workspaceId: string;
  boxDir: string;
  apiUrl: string;
  runtimeCommand: string[];
  heartbeatMs?: number;
}): string {
  const env = [
    `WORKSPACE_ID=${q(options.workspaceId)}`,
    `WORKSPACE_DIR=${q(options.boxDir)}`,
    `WL_API_URL=${q(options.apiUrl)}`,
    ...(options.heartbeatMs === undefined ? [] : [`WL_SIM_HEARTBEAT_MS=${q(String(options.heartbeatMs))}`]),
    'WL_LAUNCH_ID="$l"',
  ].join(' ');
  return `#!/bin/sh
# Written by the workspace-lifecycle simulator (npm run simulate -- --ssh) for workspace
# ${options.workspaceId}: the SSH box settings' commands run it in the box (${BOX_RUNTIME_SCRIPT} restart|running|stop).
cd ${q(options.boxDir)} || exit 2

alive() {
  [ -f runtime.pid ] && read -r p l < runtime.pid && [ -n "$l" ] && kill -0 "$p" 2>/dev/null &&
    { [ ! -d /proc/self ] || tr '\\000' '\\n' 2>/dev/null < "/proc/$p/environ" | grep -qxF "WL_LAUNCH_ID=$l"; }
}

stop_runtime() {
  alive || return 0
  kill "$p" 2>/dev/null
  i=0
  while alive && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  if alive; then kill -9 "$p"; fi
  return 0
}

case "$1" in
  running)
    if alive; then exit 0; else exit 1; fi
    ;;
  stop)
    stop_runtime
    ;;
  restart)
    stop_runtime
    l=ssh-$(date -u +%Y%m%dT%H%M%SZ)-$$
    # A simple command in the background: $! is the runtime itself, as the exec of the local driver's launch.
    ${env} ${options.runtimeCommand.map(q).join(' ')} </dev/null >>runtime.log 2>&1 &
    p=$!
    printf '%s %s\\n' "$p" "$l" > runtime.pid.tmp && mv -f runtime.pid.tmp runtime.pid || exit 1
    sleep 1
    if ! alive; then echo "the runtime exited at once; runtime.log ends:"; tail -n 20 runtime.log; exit 1; fi
    echo "runtime started over SSH: pid $p, launch $l"
    ;;
  *)
    echo "usage: $0 restart|running|stop" >&2
    exit 2
    ;;
esac
`;
}
