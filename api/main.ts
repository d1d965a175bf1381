/**
 * Runs the HTTP API: `npm run api` (or as part of `npm start`). Settings from the environment;
 * see the README's configuration table.
 */
import { Client, Connection, defaultGrpcRetryOptions, makeGrpcRetryInterceptor } from '@temporalio/client';
import { fileURLToPath } from 'node:url';
import { sourceSettingsFromEnv } from '../activities/settings.js';
import { clientConnectionOptions, temporalSettingsFromEnv } from '../connection.js';
import { Store } from '../db/store.js';
import { parseLifecycleOverrides } from '../workflows/config.js';
import { TASK_QUEUE } from '../workflows/definitions.js';
import { defaultAdmissionSettings } from './admission.js';
import { buildApi, defaultApiSettings, type ApiSettings } from './server.js';

export function apiSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): ApiSettings {
  const adminToken = env['WL_ADMIN_TOKEN'];
  if (!adminToken || adminToken.length < 16) throw new Error('WL_ADMIN_TOKEN must be set to at least 16 characters');
  return {
    ...defaultApiSettings,
    adminToken,
    taskQueue: env['TEMPORAL_TASK_QUEUE'] ?? TASK_QUEUE,
    urlPolicy: {
      allowLoopback: env['WL_ALLOW_LOOPBACK_URLS'] === 'true',
      allowPrivate: env['WL_ALLOW_PRIVATE_URLS'] === 'true',
    },
    sources: sourceSettingsFromEnv(env),
    logLevel: env['LOG_LEVEL'] ?? 'info',
    lifecycle: env['WL_LIFECYCLE_CONFIG'] ? parseLifecycleOverrides(env['WL_LIFECYCLE_CONFIG']) : {},
    admission: {
      ...defaultAdmissionSettings,
      maxInFlight: positiveInt(env, 'WL_API_MAX_IN_FLIGHT', defaultAdmissionSettings.maxInFlight),
      maxQueued: positiveInt(env, 'WL_API_MAX_QUEUED', defaultAdmissionSettings.maxQueued, 0),
      maxQueueWaitMs: positiveInt(env, 'WL_API_MAX_QUEUE_WAIT_MS', defaultAdmissionSettings.maxQueueWaitMs),
    },
  };
}

function positiveInt(env: NodeJS.ProcessEnv, name: string, fallback: number, min = 1): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer >= ${min} (got ${raw})`);
  return value;
}

/** Attempts per Temporal call (the SDK's default is 10, with backoff up to 5 s). */
const API_GRPC_ATTEMPTS = 3;

export interface RunningApi {
  url: string;
  close: () => Promise<void>;
}

export async function startApi(env: NodeJS.ProcessEnv = process.env): Promise<RunningApi> {
  const databaseUrl = env['DATABASE_URL'];
  if (!databaseUrl) throw new Error('DATABASE_URL is not set');
  const temporal = temporalSettingsFromEnv(env);
  // Lazy: the API starts and answers (503, /readyz) while Temporal is still down. Few gRPC
  // retries: a Temporal that is down is answered 503 in well under a second (the runtime
  // retries after Retry-After) instead of holding the call and its admission slot.
  const connection = Connection.lazy({
    ...clientConnectionOptions(temporal),
    interceptors: [makeGrpcRetryInterceptor(defaultGrpcRetryOptions({ maxAttempts: API_GRPC_ATTEMPTS }))],
  });
  const client = new Client({ connection, namespace: temporal.namespace });
  const settings = apiSettingsFromEnv(env);
  const store = Store.connect(databaseUrl, {
    onIdleError: (err) =>
      app.log.warn({ err: err.message }, 'database: an idle connection failed; the next query reconnects'),
  });
  const app = await buildApi(client, store, settings);
  const url = await app.listen({ host: env['WL_API_HOST'] ?? '127.0.0.1', port: Number(env['WL_API_PORT'] ?? 8080) });
  return {
    url,
    close: async () => {
      await app.close();
      await store.close();
      await connection.close();
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    const api = await startApi();
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void api.close());
  } catch (err) {
    console.error(`api: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
}
