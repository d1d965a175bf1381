/**
 * Tracing with an OTLP endpoint, as `OTEL_EXPORTER_OTLP_ENDPOINT` turns it on: spans go over
 * OTLP/HTTP to the configured URL (a collector stand-in on a loopback port here). The other
 * tracing tests give the provider an in-memory exporter, so this is the one that sends.
 */
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSettings } from '../../settings.js';
import { startTracing } from '../../tracing.js';

interface Received {
  method: string;
  url: string;
  contentType: string;
  bytes: number;
}

const received: Received[] = [];
const collector = createServer((request: IncomingMessage, response) => {
  let bytes = 0;
  request.on('data', (chunk: Buffer) => (bytes += chunk.length));
  request.on('end', () => {
    received.push({
      method: request.method ?? '',
      url: request.url ?? '',
      contentType: request.headers['content-type'] ?? '',
      bytes,
    });
    response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
});
let endpoint = '';

beforeAll(async () => {
  await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve, reject) => collector.close((err) => (err ? reject(err) : resolve())));
});

describe('tracing to an OTLP endpoint', () => {
  it('exports the spans to the endpoint the settings name when it shuts down', async () => {
    const settings = loadSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint }).tracing;
    const tracing = startTracing('otlp-test', settings);
    if (tracing === null) throw new Error('tracing did not start');
    try {
      const span = tracing.tracer.startSpan('a span');
      expect(span.isRecording()).toBe(true);
      span.end();
    } finally {
      await tracing.shutdown();
    }
    expect(received).toHaveLength(1);
    expect(received[0]).toMatchObject({ method: 'POST', url: '/v1/traces' });
    expect(received[0]?.contentType).toMatch(/^application\/(json|x-protobuf)/);
    expect(received[0]?.bytes).toBeGreaterThan(0);
  });
});
