/**
 * A throwaway OpenSSH server on a free loopback port: its own fresh host key, only the given
 * public keys authorized, logging in as the user that starts it (root too, by key only). The SSH
 * driver's test and the simulator's `--ssh` run boxes behind one; `scripts/sshd.sh` installs
 * OpenSSH when it is missing.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';

export const SSHD_PATH = '/usr/sbin/sshd';

export interface ThrowawaySshd {
  port: number;
  /** The pinned form of its host key: `<type> <base64>`. */
  hostKey: string;
  pid: number;
  /** Its log (`LogLevel VERBOSE`: one `Accepted publickey` line per login). */
  log: string;
  /** Stops the server and the connections it is serving; idempotent. */
  stop(): Promise<void>;
}

/** Makes an ed25519 key pair without a passphrase at `file` (and `file.pub`); its public half as `<type> <base64>`. */
export function keygen(file: string, comment = 'workspace-lifecycle'): string {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file]);
  return readFileSync(`${file}.pub`, 'utf8').trim().split(' ').slice(0, 2).join(' ');
}

/** A loopback port nothing listens on right now. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === 'string') throw new Error('no free port');
  return address.port;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Starts sshd with its files in `dir` (created if missing) and waits until it accepts
 * connections. It runs in a process group of its own, so a Ctrl-C meant for the caller does not
 * stop it before the caller's cleanup has used it, and it may outlive the caller on purpose.
 * Throws with the reason when sshd is missing or does not come up.
 */
export async function startThrowawaySshd(options: { dir: string; authorizedKeys: string[] }): Promise<ThrowawaySshd> {
  const { dir } = options;
  if (!existsSync(SSHD_PATH)) throw new Error(`${SSHD_PATH} is missing (bash scripts/sshd.sh installs it)`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const hostKeyFile = join(dir, 'host_ed25519');
  const hostKey = keygen(hostKeyFile, 'throwaway-sshd');
  writeFileSync(join(dir, 'authorized_keys'), options.authorizedKeys.map((key) => `${key}\n`).join(''));
  // sshd running as root needs its privilege separation directory, which only its service makes.
  if (process.getuid?.() === 0) mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const port = await freePort();
  const log = join(dir, 'sshd.log');
  const config = join(dir, 'sshd_config');
  writeFileSync(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKeyFile}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'StrictModes no',
      'UsePAM no',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      // Whoever starts it logs in, root too: by key only.
      'PermitRootLogin prohibit-password',
      'MaxSessions 50',
      'MaxStartups 50',
      'LogLevel VERBOSE',
      '',
    ].join('\n'),
  );
  const child = spawn(SSHD_PATH, ['-D', '-f', config, '-E', log], { stdio: 'ignore', detached: true });
  child.unref();
  const pid = child.pid;
  const exited: { code: number | null } = { code: null };
  const gone = new Promise<void>((resolve) => {
    child.once('exit', (code) => {
      exited.code = code ?? -1;
      resolve();
    });
    child.once('error', (err) => {
      exited.code = -1;
      writeFileSync(log, `could not run ${SSHD_PATH}: ${err.message}\n`, { flag: 'a' });
      resolve();
    });
  });
  const stop = async (): Promise<void> => {
    if (pid === undefined || exited.code !== null) return;
    // Held again while it stops, so the caller's process waits for its exit.
    child.ref();
    // Each connection is served by a child of the listener, which stopping the listener leaves
    // running: they go first, while the listener is there to reap them.
    for (const connection of childrenOf(pid)) signal(connection, 'SIGTERM');
    for (let waited = 0; waited < 2_000 && childrenOf(pid).length > 0; waited += 50)
      await new Promise((resolve) => setTimeout(resolve, 50));
    signal(pid, 'SIGTERM');
    const stopped = await Promise.race([
      gone.then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 5_000)),
    ]);
    if (!stopped) signal(pid, 'SIGKILL');
    await gone;
  };
  const deadline = Date.now() + 10_000;
  while (!(await accepts(port))) {
    const why = existsSync(log) ? readFileSync(log, 'utf8').trim() : '';
    if (exited.code !== null) throw new Error(`sshd exited at once (code ${exited.code}): ${why}`);
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`sshd did not listen on port ${port} within 10 s: ${why}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  if (pid === undefined) throw new Error(`could not start ${SSHD_PATH}`);
  return { port, hostKey, pid, log, stop };
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // already gone
  }
}

/** The processes whose parent is `pid` (from /proc; none where there is no /proc). */
function childrenOf(pid: number): number[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  return entries
    .filter((name) => /^\d+$/.test(name))
    .flatMap((name) => {
      const stat = (() => {
        try {
          return readFileSync(`/proc/${name}/stat`, 'utf8');
        } catch {
          return '';
        }
      })();
      // The command name is in parentheses and may hold spaces: the parent follows the last ')'.
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      return parent === pid ? [Number(name)] : [];
    });
}
