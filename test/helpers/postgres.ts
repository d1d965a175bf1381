import pg from 'pg';
import { inject } from 'vitest';
import { migrate } from '../../db/migrate.js';
import { hashSecret, newSecret } from '../../db/secrets.js';
import { Store } from '../../db/store.js';
import { onlineContract } from './state-machine.js';
import type { Projection, Publication } from '../../db/tables/workspaces.js';

/**
 * The test database (DATABASE_URL, or the local cluster the global setup started), migrated.
 * With `isolated`, a database of its own (`<test db>_<isolated>`, created if missing) for a
 * test file that asserts on whole-table counts while other files write in parallel.
 */
export async function connectTestStore(isolated?: string): Promise<Store> {
  let url = inject('databaseUrl');
  if (isolated !== undefined) {
    const target = new URL(url);
    const name = `${target.pathname.slice(1)}_${isolated}`;
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    try {
      const found = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
      if (found.rowCount === 0) await admin.query(`CREATE DATABASE "${name.replace(/"/g, '')}"`);
    } finally {
      await admin.end();
    }
    target.pathname = `/${name}`;
    url = target.toString();
  }
  await migrate(url);
  return Store.connect(url);
}

/** A bare workspace row, as if created outside the API. */
export async function ensureWorkspace(store: Store, workspaceId: string): Promise<void> {
  await store.pool.query('INSERT INTO workspaces (id) VALUES ($1) ON CONFLICT (id) DO NOTHING', [workspaceId]);
}

/** A new boot credential for the workspace, as a restart hands its box one; returns the credential. */
export async function giveBootCredential(store: Store, workspaceId: string): Promise<string> {
  const credential = newSecret();
  await store.bootCredentials.set(workspaceId, hashSecret(credential));
  return credential;
}

/** The workspace's projection row as SQL readers see it; null when there is none. */
export async function readProjection(store: Store, workspaceId: string): Promise<Projection | null> {
  const { rows } = await store.pool.query<{ status: string; url: string | null; status_since: Date; version: string }>(
    'SELECT status, url, status_since, version FROM workspaces WHERE id = $1',
    [workspaceId],
  );
  const row = rows[0];
  if (!row) return null;
  return {
    workspaceId,
    status: row.status,
    url: row.url,
    statusSince: row.status_since.toISOString(),
    version: Number(row.version),
  };
}

/** A projection write as a workflow makes it, with the contract of an online workspace unless given. */
export function publication(projection: Projection, overrides: Partial<Publication> = {}): Publication {
  return {
    ...projection,
    contract: onlineContract(),
    leaseAgeMs: 0,
    restart: null,
    ...overrides,
  };
}
