/**
 * Versioned, forward-only schema migrations (node-pg-migrate over the SQL files in
 * db/migrations). The worker runs them at start; `npm run migrate` runs them by hand.
 * Runs started together (several workers starting at once) take turns on an advisory lock: the
 * first applies what is pending, the others wait for it and find nothing left, instead of failing.
 */
import { runner } from 'node-pg-migrate';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { projectPath } from '../project.js';

export const migrationsDir = projectPath('db', 'migrations');

export async function migrate(
  databaseUrl: string,
  log: (message: string) => void = () => undefined,
): Promise<string[]> {
  // Our own client, ended before we return: the runner's would be closed without waiting, and a
  // connection still closing (or cut by the server) would raise an error nobody listens to.
  const client = new pg.Client({ connectionString: databaseUrl });
  let lost: Error | undefined;
  client.on('error', (error) => {
    lost = error;
  });
  await client.connect();
  try {
    const applied = await runner({
      dbClient: client,
      dir: migrationsDir,
      direction: 'up',
      migrationsTable: 'schema_migrations',
      advisoryLockMode: 'wait',
      count: Infinity,
      log,
      verbose: false,
    });
    return applied.map((migration) => migration.name);
  } catch (error) {
    throw lost ?? error;
  } finally {
    await client.end().catch(() => undefined);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const databaseUrl = process.env['DATABASE_URL'];
  if (!databaseUrl) {
    console.error('migrate: DATABASE_URL is not set (e.g. postgres://user@127.0.0.1:5432/workspace_lifecycle)');
    process.exit(2);
  }
  const applied = await migrate(databaseUrl, (message) => console.log(`migrate: ${message}`));
  console.log(applied.length === 0 ? 'migrate: schema is up to date' : `migrate: applied ${applied.join(', ')}`);
}
