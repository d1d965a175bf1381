import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import type { Activities } from '../../activities/index.js';
import type { SourceSettings } from '../../activities/plugins/source.js';
import { defaultApiSettings, type ApiSettings } from '../../api/server.js';
import type { Store } from '../../db/store.js';
import type { FakeActivities } from './fake-activities.js';

export const TEST_ADMIN_TOKEN = 'test-admin-token-0123456789';

/**
 * API settings for tests on `taskQueue`: silent, gitea:// and github:// at example hosts,
 * git+file:// under /srv/plugins, any git host unless `sources` lists some.
 */
export function testApiSettings(
  taskQueue: string,
  sources: Partial<SourceSettings> = {},
  overrides: Partial<ApiSettings> = {},
): ApiSettings {
  return {
    ...defaultApiSettings,
    adminToken: TEST_ADMIN_TOKEN,
    taskQueue,
    logLevel: 'silent',
    sources: {
      giteaBaseUrl: 'https://git.example.test',
      githubBaseUrl: 'https://github.example.test',
      allowUnpinned: false,
      sourceHosts: null,
      fileRoots: ['/srv/plugins'],
      urlPolicy: defaultApiSettings.urlPolicy,
      ...sources,
    },
    ...overrides,
  };
}

/** What the worker behind an API test runs: box activities mocked, the projection and token revocation the real store's. */
export function apiTestActivities(fake: FakeActivities, store: Store): Activities {
  return {
    ...fake.activities,
    writeProjection: (projection) => store.workspaces.writeProjection(projection),
    revokeInstanceTokens: ({ workspaceId, mintedBefore }) => store.tokens.revoke(workspaceId, mintedBefore),
  };
}

/** Closes what an API test started, the API first (its deferred forwards finish), the store last. */
export async function closeApiTest(parts: {
  api: FastifyInstance;
  worker: Worker;
  running: Promise<void>;
  env: TestWorkflowEnvironment;
  store: Store;
}): Promise<void> {
  await parts.api.close();
  parts.worker.shutdown();
  await parts.running;
  await parts.env.teardown();
  await parts.store.close();
}
