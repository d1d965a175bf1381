import { execFileSync } from 'node:child_process';
import { projectPath } from '../project.js';

/**
 * Starts (or reuses) the local PostgreSQL cluster of scripts/postgres.sh, creates `database`
 * in it if needed, and returns its URL.
 */
export function localDatabaseUrl(database: string): string {
  const script = projectPath('scripts', 'postgres.sh');
  const output = execFileSync('bash', [script], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, WL_PG_DATABASE: database },
  });
  const url = /^export DATABASE_URL=(\S+)$/m.exec(output)?.[1];
  if (url === undefined) throw new Error(`scripts/postgres.sh printed no DATABASE_URL:\n${output}`);
  return url;
}
