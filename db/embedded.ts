/**
 * An embedded PostgreSQL for `npm start` without DATABASE_URL: PGlite (PostgreSQL compiled to
 * WASM, in this process) persisted under `dataDir`, served over the PostgreSQL wire protocol by
 * pglite-socket, so the unchanged `pg` pools and node-pg-migrate connect to it by URL.
 *
 * PGlite is one backend session. pglite-socket (0.2.17) multiplexes every client connection onto
 * it one protocol message at a time and keeps the session to one connection only while
 * `isInTransaction()` is true. That is too short for the extended protocol `pg` uses for
 * parameterised queries: between one connection's Parse and its Sync another connection's Parse
 * replaced the unnamed statement, giving `bind message supplies 2 parameters, but prepared
 * statement "" requires 1`, wrong rows, and hangs (upstream electric-sql/pglite#1046, PR #977).
 * So the server sees a PGlite whose `isInTransaction()` also holds from a connection's first
 * message until the backend is idle again (ReadyForQuery 'I'): each query or transaction runs
 * whole, one at a time. Connections still share one session (session advisory locks, SET).
 * PGlite itself lets two processes open one folder (and corrupt it); `<dataDir>.lock` prevents that.
 */
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';

export interface EmbeddedDatabaseOptions {
  /** Folder holding the database files; created on first use, reopened afterwards. */
  dataDir: string;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: a free port chosen by the OS. */
  port?: number;
  /** Client connections served at once (default 64: the API's and the worker's pools of 10, and spare). */
  maxConnections?: number;
}

export interface EmbeddedDatabase {
  /** `postgres://postgres@host:port/postgres`, for `pg` and node-pg-migrate. */
  url: string;
  /** Stops the socket server, then closes PGlite, which flushes the data folder. */
  close(): Promise<void>;
}

export async function startEmbeddedDatabase(options: EmbeddedDatabaseOptions): Promise<EmbeddedDatabase> {
  const host = options.host ?? '127.0.0.1';
  mkdirSync(options.dataDir, { recursive: true });
  const unlock = lockDataDir(options.dataDir);
  let db: PGlite;
  try {
    db = await PGlite.create(options.dataDir);
  } catch (err) {
    unlock();
    throw err;
  }
  const server = new PGLiteSocketServer({
    db: pinnedUntilIdle(db),
    host,
    port: options.port ?? 0,
    maxConnections: options.maxConnections ?? 64,
  });
  let port = options.port ?? 0;
  server.addEventListener('listening', (event) => {
    const detail = (event as CustomEvent<{ port?: number }>).detail;
    if (detail.port !== undefined) port = detail.port;
  });
  try {
    await server.start();
  } catch (err) {
    await db.close();
    unlock();
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new Error(`embedded database: ${host}:${port} is already in use; choose another port or set DATABASE_URL`, {
        cause: err,
      });
    }
    throw err;
  }

  let closing: Promise<void> | undefined;
  return {
    url: `postgres://postgres@${host}:${port}/postgres`,
    close: () =>
      (closing ??= (async () => {
        await server.stop();
        await db.close();
        unlock();
      })()),
  };
}

/** Takes `<dataDir>.lock` (this process's pid) unless a live process holds it; returns its release. */
function lockDataDir(dataDir: string): () => void {
  const lockFile = `${dataDir.replace(/\/+$/, '')}.lock`;
  try {
    writeFileSync(lockFile, String(process.pid), { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const holder = Number(readFileSync(lockFile, 'utf8'));
    if (Number.isInteger(holder) && holder > 0 && isAlive(holder)) {
      throw new Error(`embedded database: ${dataDir} is in use by process ${holder} (${lockFile})`);
    }
    writeFileSync(lockFile, String(process.pid)); // stale: its process is gone
  }
  return () => rmSync(lockFile, { force: true });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** ReadyForQuery ('Z', length 5) with transaction status idle ('I'). */
const READY_IDLE = [0x5a, 0, 0, 0, 5, 0x49];
const TERMINATE = 0x58; // 'X': the client leaves; nothing answers it

/** `db` for the socket server, busy (so kept to one connection) until the backend is idle again. */
function pinnedUntilIdle(db: PGlite): PGlite {
  let busy = false;
  const execProtocolRawStream: PGlite['execProtocolRawStream'] = async (message, streamOptions) => {
    const tail: number[] = [];
    await db.execProtocolRawStream(message, {
      ...streamOptions,
      onRawData: (data) => {
        for (const byte of data.subarray(-6)) tail.push(byte);
        tail.splice(0, tail.length - 6);
        streamOptions.onRawData(data);
      },
    });
    const idle = tail.length === 6 && tail.every((byte, i) => byte === READY_IDLE[i]);
    busy = !idle && message[0] !== TERMINATE;
  };
  return new Proxy(db, {
    get(target, property) {
      if (property === 'isInTransaction') return () => busy || target.isInTransaction();
      if (property === 'execProtocolRawStream') return execProtocolRawStream;
      if (property === 'exec') {
        // pglite-socket rolls back a departed connection's transaction with exec('ROLLBACK').
        return async (...args: Parameters<PGlite['exec']>) => {
          const results = await target.exec(...args);
          busy = false;
          return results;
        };
      }
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}
