/** Plugin source and staging settings from the environment, shared by the worker and the API. */
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SourceSettings } from './plugins/source.js';
import type { StageSettings } from './plugins/stage.js';

/** Where local state lives (dev server database, boxes, plugin cache): `WL_DATA_DIR` or `data/`. */
export function dataDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env['WL_DATA_DIR'] ?? fileURLToPath(new URL('../data/', import.meta.url)));
}

export function positiveNumber(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const value = Number(env[name] ?? fallback);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, got ${env[name]}`);
  return value;
}

export function sourceSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): SourceSettings & StageSettings {
  return {
    giteaBaseUrl: env['WL_GITEA_BASE_URL'] ?? '',
    githubBaseUrl: env['WL_GITHUB_BASE_URL'] ?? 'https://github.com',
    allowUnpinned: env['WL_ALLOW_UNPINNED_PLUGINS'] === 'true',
    pluginsDir: resolve(env['WL_PLUGINS_DIR'] ?? join(dataDir(env), 'plugins')),
    cacheDir: resolve(env['WL_PLUGIN_CACHE_DIR'] ?? join(dataDir(env), 'plugin-cache')),
    maxPluginBytes: positiveNumber(env, 'WL_PLUGIN_MAX_BYTES', 100 * 1024 * 1024),
    fetchTimeoutMs: positiveNumber(env, 'WL_PLUGIN_FETCH_TIMEOUT_MS', 5 * 60_000),
  };
}

export function dataPath(name: string, env: NodeJS.ProcessEnv = process.env): string {
  return join(dataDir(env), name);
}
