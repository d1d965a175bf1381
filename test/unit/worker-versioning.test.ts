/** Which version a worker polls as: the settings (WL_WORKER_*) and the build id of its workflow code. */
import { describe, expect, it } from 'vitest';
import { SettingsError, versioningFromEnv } from '../../settings.js';
import { setCurrentVersionCommand, workerVersion } from '../../worker.js';

describe('worker versioning settings', () => {
  it('is on by default, in the workspace-lifecycle deployment, its build id derived', () => {
    expect(versioningFromEnv({})).toEqual({ deploymentName: 'workspace-lifecycle', buildId: undefined });
    expect(versioningFromEnv({ WL_WORKER_DEPLOYMENT: 'fleet-a', WL_WORKER_BUILD_ID: 'release-0_1_0' })).toEqual({
      deploymentName: 'fleet-a',
      buildId: 'release-0_1_0',
    });
    expect(versioningFromEnv({ WL_WORKER_VERSIONING: 'false', WL_WORKER_BUILD_ID: 'ignored' })).toBeNull();
  });

  it('refuses a bad flag, and names with characters a deployment version cannot hold', () => {
    expect(() => versioningFromEnv({ WL_WORKER_VERSIONING: 'yes' })).toThrow(SettingsError);
    expect(() => versioningFromEnv({ WL_WORKER_DEPLOYMENT: 'a:b' })).toThrow(/WL_WORKER_DEPLOYMENT must be/);
    expect(() => versioningFromEnv({ WL_WORKER_BUILD_ID: '0.1.0' })).toThrow(/WL_WORKER_BUILD_ID must be/);
  });
});

describe('a worker build id', () => {
  it('is the same for the same workflow code, another for other code; a configured one wins', () => {
    const derived = { deploymentName: 'workspace-lifecycle', buildId: undefined };
    const first = workerVersion(derived, 'bundle code');
    expect(first.buildId).toMatch(/^workflows-[0-9a-f]{12}$/);
    expect(workerVersion(derived, 'bundle code')).toEqual(first);
    expect(workerVersion(derived, 'other code').buildId).not.toBe(first.buildId);
    expect(workerVersion({ deploymentName: 'd', buildId: 'r1' }, 'bundle code')).toEqual({
      deploymentName: 'd',
      buildId: 'r1',
    });
    expect(setCurrentVersionCommand(first, 'default')).toBe(
      `temporal worker deployment set-current-version --namespace default --deployment-name workspace-lifecycle --build-id ${first.buildId}`,
    );
  });
});
