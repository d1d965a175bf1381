/** The schema migrations (db/migrate.ts) on real PostgreSQL, run by several processes at once as workers start. */
import { readdirSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { migrate, migrationsDir } from '../../db/migrate.js';

let url: string;
let admin: pg.Client;
const name = `${new URL(inject('databaseUrl')).pathname.slice(1)}_migrate_${process.pid}`;

beforeAll(async () => {
  admin = new pg.Client({ connectionString: inject('databaseUrl') });
  await admin.connect();
  await admin.query(`CREATE DATABASE "${name}"`);
  const target = new URL(inject('databaseUrl'));
  target.pathname = `/${name}`;
  url = target.toString();
});

afterAll(async () => {
  await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  await admin.end();
});

describe('migrations', () => {
  it('runs started together on an empty database all succeed: one applies every migration, the others wait for it and find none left', async () => {
    const all = readdirSync(migrationsDir)
      .filter((file) => file.endsWith('.sql'))
      .map((file) => file.replace(/\.sql$/, ''))
      .sort();
    const runs = await Promise.all([migrate(url), migrate(url), migrate(url)]);
    expect(runs.map((applied) => applied.length).sort((a, b) => a - b)).toEqual([0, 0, all.length]);
    expect(runs.flat().sort()).toEqual(all);
    expect(await migrate(url)).toEqual([]);
  });

  it('closes its connection before it returns, so the database can be dropped at once', async () => {
    await migrate(url);
    const { rows } = await admin.query<{ count: string }>('SELECT count(*) FROM pg_stat_activity WHERE datname = $1', [
      name,
    ]);
    expect(Number(rows[0]?.count)).toBe(0);
  });
});
