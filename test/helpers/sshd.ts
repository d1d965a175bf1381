import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import type { SshBoxSettings } from '../../activities/box/ssh-settings.js';
import { keygen, SSHD_PATH, startThrowawaySshd, type ThrowawaySshd } from '../../scripts/sshd.js';

export interface TestSshd {
  sshd: ThrowawaySshd;
  /** The worker's key directory, holding the client key `client` the sshd trusts. */
  keyDir: string;
  /** SSH settings of a box at `root` behind this sshd, logging in as this user with `client`. */
  settings: (root: string, commands?: Pick<SshBoxSettings, 'restartCommand' | 'runningCommand'>) => SshBoxSettings;
}

/**
 * A throwaway sshd for one test file (scripts/sshd.ts) trusting one fresh client key, `client`
 * in `<work>/keys`. Without sshd: null and a warning, so the file's SSH tests are skipped,
 * except in CI, where it throws (after deleting `work`).
 */
export async function startTestSshd(work: string, what: string): Promise<TestSshd | null> {
  const keyDir = join(work, 'keys');
  mkdirSync(keyDir, { recursive: true, mode: 0o700 });
  const started = await (async (): Promise<ThrowawaySshd | string> => {
    if (!existsSync(SSHD_PATH)) return `${SSHD_PATH} is missing (bash scripts/sshd.sh installs it)`;
    const clientPublic = keygen(join(keyDir, 'client'), 'wl-ssh-test');
    return startThrowawaySshd({ dir: join(work, 'sshd'), authorizedKeys: [clientPublic] });
  })().catch((err: unknown) => (err instanceof Error ? err.message : String(err)));
  if (typeof started !== 'string') {
    const sshd = started;
    return {
      sshd,
      keyDir,
      settings: (root, commands = { restartCommand: 'true', runningCommand: 'true' }) => ({
        host: '127.0.0.1',
        port: sshd.port,
        user: userInfo().username,
        keyRef: 'client',
        hostKey: sshd.hostKey,
        root,
        ...commands,
      }),
    };
  }
  if (process.env['CI']) {
    rmSync(work, { recursive: true, force: true });
    throw new Error(`${what} needs a real sshd: ${started}`);
  }
  console.warn(`skipping ${what}: ${started}`);
  return null;
}
