/** The local data folder of `npm start` and `npm run start:cluster`: its secrets and its boxes' runtimes. */
import { chmodSync, lstatSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { LocalBoxDriver } from '../activities/box/local.js';
import { adminTokenPath } from '../settings.js';

/**
 * The data folder holds secrets (the admin token, the embedded database, by default the SSH
 * keys), so it is its user's alone: the folder and the SSH key folder 0700, the admin token and
 * the key files 0600. Set at every start, so a folder made before, or by hand, is made private
 * too. Links are not followed (lstat): only what is really there is changed.
 */
export function keepSecretsPrivate(dataDir: string, sshKeyDir: string): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  chmodSync(dataDir, 0o700);
  if (lstatSafe(adminTokenPath())?.isFile()) chmodSync(adminTokenPath(), 0o600);
  if (!lstatSafe(sshKeyDir)?.isDirectory()) return;
  chmodSync(sshKeyDir, 0o700);
  for (const name of readdirSync(sshKeyDir)) {
    const file = join(sshKeyDir, name);
    if (lstatSafe(file)?.isFile()) chmodSync(file, 0o600);
  }
}

function lstatSafe(path: string): ReturnType<typeof lstatSync> | null {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
}

/**
 * Stops the runtimes of the local boxes under `boxesDir` (started by a worker of `npm start` or
 * `npm run start:cluster`, or by the simulator), so none outlives the service that restarts and
 * watches them. Returns how many it stopped.
 */
export async function stopBoxRuntimes(boxesDir: string): Promise<number> {
  const driver = new LocalBoxDriver({ root: boxesDir, runtimeCommand: null });
  let ids: string[];
  try {
    ids = readdirSync(boxesDir);
  } catch {
    return 0;
  }
  return (await Promise.all(ids.map((id) => driver.stopRuntime(id)))).filter(Boolean).length;
}
