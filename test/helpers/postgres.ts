import { inject } from 'vitest';
import { migrate } from '../../db/migrate.js';
import { Store } from '../../db/store.js';

/** The test database (DATABASE_URL, or the local cluster the global setup started), migrated. */
export async function connectTestStore(): Promise<Store> {
  const url = inject('databaseUrl');
  await migrate(url);
  return Store.connect(url);
}
