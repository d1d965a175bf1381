import type { SourceSettings } from '../../activities/plugins/source.js';
import { defaultApiSettings, type ApiSettings } from '../../api/server.js';

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
