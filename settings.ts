/** Settings from the environment shared by the worker, the API, `npm start` and the simulator: data folders, plugin sources and staging, the box runtime. */
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

/** Where the local box driver keeps its boxes: `WL_BOXES_DIR` or `<data dir>/boxes`. */
export function boxesDirFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env['WL_BOXES_DIR'] ?? dataPath('boxes', env));
}

/** The admin token `npm start` makes when `WL_ADMIN_TOKEN` is unset, for the simulator to read. */
export function adminTokenPath(env: NodeJS.ProcessEnv = process.env): string {
  return dataPath('admin-token', env);
}

/**
 * `WL_RUNTIME_COMMAND`: the runtime the local box driver runs in each box, a JSON array of
 * non-empty strings (program, then arguments); null when unset or empty. Throws, naming the
 * variable, when it is not JSON or not such an array.
 */
export function runtimeCommandFromEnv(env: NodeJS.ProcessEnv = process.env): string[] | null {
  const text = env['WL_RUNTIME_COMMAND'];
  if (text === undefined || text.trim() === '') return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`WL_RUNTIME_COMMAND is not valid JSON (${(err as Error).message}): ${text}`);
  }
  if (
    !Array.isArray(parsed) ||
    parsed.length === 0 ||
    !parsed.every((part): part is string => typeof part === 'string' && part !== '')
  )
    throw new Error(
      `WL_RUNTIME_COMMAND must be a JSON array of non-empty strings (program, then arguments), ` +
        `e.g. ["node","runtime.js"], got ${text}`,
    );
  return parsed;
}

/** The simulated runtime (simulator/runtime.ts) under tsx, with this Node: what `npm start` runs in local boxes by default. */
export function defaultRuntimeCommand(): string[] {
  return [
    process.execPath,
    '--import',
    import.meta.resolve('tsx/esm'),
    fileURLToPath(new URL('../simulator/runtime.ts', import.meta.url)),
  ];
}
