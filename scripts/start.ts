/**
 * Runs the service on one machine: a Temporal dev server (SQLite file under data/, Web UI),
 * a local PostgreSQL cluster (scripts/postgres.sh) and the worker. With TEMPORAL_ADDRESS or
 * DATABASE_URL set it uses those instead.
 * Ctrl-C stops the worker (draining in-flight tasks) and then the dev server.
 */
import { Connection } from '@temporalio/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createWorker, workerSettingsFromEnv } from '../worker.js';
import { temporalCliPath } from './toolchain.js';
import { localDatabaseUrl } from './postgres.js';

const dataDir = fileURLToPath(new URL('../data/', import.meta.url));
const port = Number(process.env['TEMPORAL_PORT'] ?? 7233);
const uiPort = Number(process.env['TEMPORAL_UI_PORT'] ?? 8233);

function startDevServer(): ChildProcess {
  const cli = temporalCliPath();
  if (cli === undefined) throw new Error('Temporal CLI not found: run `npm run toolchain` or set TEMPORAL_CLI_PATH');
  mkdirSync(dataDir, { recursive: true });
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), '--ui-port', String(uiPort)];
  args.push('--db-filename', `${dataDir}temporal.db`, '--log-level', 'warn');
  console.log(`start: temporal ${args.join(' ')}`);
  return spawn(cli, args, { stdio: ['ignore', 'inherit', 'inherit'] });
}

async function waitForTemporal(address: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const connection = await Connection.connect({ address, connectTimeout: 1_000 });
      await connection.close();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`Temporal at ${address} not reachable: ${String(err)}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

process.env['DATABASE_URL'] ??= localDatabaseUrl();
const external = process.env['TEMPORAL_ADDRESS'];
const devServer = external === undefined ? startDevServer() : undefined;
const settings = { ...workerSettingsFromEnv(), address: external ?? `127.0.0.1:${port}` };
await waitForTemporal(settings.address, 60_000);
const { worker, store } = await createWorker(settings);

console.log(`start: Temporal   ${settings.address} (namespace ${settings.namespace})`);
console.log(`start: database   ${settings.databaseUrl}`);
if (devServer) console.log(`start: Web UI     http://127.0.0.1:${uiPort}`);
console.log(`start: worker     polling task queue ${settings.taskQueue}; Ctrl-C to stop`);

await worker.run(); // returns after SIGINT/SIGTERM once in-flight tasks drained
await store.close();
if (devServer) {
  devServer.kill('SIGTERM');
  await new Promise((resolve) => devServer.once('exit', resolve));
}
console.log('start: stopped');
