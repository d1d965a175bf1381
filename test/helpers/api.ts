import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import type { Activities } from '../../activities/index.js';
import { defaultApiSettings, type ApiSettings } from '../../api/server.js';
import type { Store } from '../../db/store.js';
import type { FakeActivities } from './fake-activities.js';

/**
 * An API's settings for a test: its admin token and task queue, no log, and plugin sources on
 * hosts that do not exist (validated, never fetched).
 */
export function testApiSettings(
  adminToken: string,
  taskQueue: string,
  overrides: Partial<ApiSettings> = {},
): ApiSettings {
  return {
    ...defaultApiSettings,
    adminToken,
    taskQueue,
    logLevel: 'silent',
    sources: {
      giteaBaseUrl: 'https://git.example.test',
      githubBaseUrl: 'https://github.example.test',
      allowUnpinned: false,
      sourceHosts: ['plugins.example.test'],
      fileRoots: ['/srv/plugins'],
    },
    ...overrides,
  };
}

/** What the worker behind an API test runs: box activities mocked, the projection and token revocation the real store's. */
export function apiTestActivities(fake: FakeActivities, store: Store): Activities {
  return {
    ...fake.activities,
    writeProjection: (projection) => store.writeProjection(projection),
    revokeInstanceTokens: ({ workspaceId, mintedBefore }) => store.revokeInstanceTokens(workspaceId, mintedBefore),
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
