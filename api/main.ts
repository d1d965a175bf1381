/**
 * Runs the HTTP API: `npm run api` (or as part of `npm start`). Settings are loaded once from
 * the environment (settings.ts; the README's configuration table) and passed in as values.
 */
import { Client, Connection, defaultGrpcRetryOptions, makeGrpcRetryInterceptor } from '@temporalio/client';
import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import { clientConnectionOptions } from '../connection.js';
import { Store } from '../db/store.js';
import { apiSettings, loadSettings, requireDatabaseUrl, type Settings } from '../settings.js';
import { clientInterceptors, startTracing } from '../tracing.js';
import { buildApi } from './server.js';
import { markServing } from './serving.js';

/** Attempts per Temporal call (the SDK's default is 10, with backoff up to 5 s). */
const API_GRPC_ATTEMPTS = 3;

export interface RunningApi {
  url: string;
  close: () => Promise<void>;
}

export async function startApi(settings: Settings): Promise<RunningApi> {
  const api = apiSettings(settings);
  const databaseUrl = requireDatabaseUrl(settings);
  // Lazy: the API starts and answers (503, /readyz) while Temporal is still down. Few gRPC
  // retries: a Temporal that is down is answered 503 in well under a second (the runtime
  // retries after Retry-After) instead of holding the call and its admission slot.
  const connection = Connection.lazy({
    ...clientConnectionOptions(settings.temporal),
    interceptors: [makeGrpcRetryInterceptor(defaultGrpcRetryOptions({ maxAttempts: API_GRPC_ATTEMPTS }))],
  });
  // Traced (when on): each signal's or update's span, its context in the call's headers.
  const tracing = startTracing('workspace-lifecycle-api', settings.tracing);
  const client = new Client({
    connection,
    namespace: settings.temporal.namespace,
    interceptors: clientInterceptors(tracing),
  });
  const store = Store.connect(databaseUrl, {
    onIdleError: (err) =>
      app.log.warn({ err: err.message }, 'database: an idle connection failed; the next query reconnects'),
  });
  const app = await buildApi(client, store, api, { tracing });
  const url = await app.listen({ host: settings.api.host, port: settings.api.port });
  const stopServing = markServing(store, client, `${hostname()}:${new URL(url).port}`, app.log);
  return {
    url,
    close: async () => {
      await stopServing();
      await app.close();
      await store.close();
      await connection.close();
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    const settings = loadSettings();
    const api = await startApi(settings);
    // Ctrl-C and a supervisor's SIGTERM may both arrive: the API closes once.
    let closing: Promise<void> | undefined;
    const stop = async (): Promise<void> => {
      await api.close();
      await startTracing('workspace-lifecycle-api', settings.tracing)?.shutdown();
    };
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void (closing ??= stop()));
  } catch (err) {
    console.error(`api: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
}
