import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A loopback HTTP server that records every request it receives. */
export interface RecordingServer {
  host: string;
  port: number;
  /** `http://<host>:<port>` */
  origin: string;
  /** `<method> <path>` of every request received, in order. */
  requests: string[];
  close(): Promise<void>;
}

/**
 * Answers each request with `respond`; without one, serves the bare repositories under
 * `projectRoot` over git's smart HTTP protocol (`git http-backend` as a CGI program), so real
 * `git ls-remote` and `git fetch` work against it.
 */
export async function startRecordingServer(options: {
  host: string;
  /** 0 (the default): any free port. */
  port?: number;
  projectRoot?: string;
  respond?: (request: IncomingMessage, response: ServerResponse) => void;
  /** Send git's answers in pieces of at most this many bytes, 10 ms apart. */
  throttleBytes?: number;
}): Promise<RecordingServer & { bytesSent: () => number }> {
  let sent = 0;
  const requests: string[] = [];
  const server = createServer((request, response) => {
    requests.push(`${request.method ?? ''} ${request.url ?? ''}`);
    if (options.respond) return options.respond(request, response);
    if (options.projectRoot === undefined) {
      response.statusCode = 404;
      return response.end();
    }
    void gitHttpBackend(options.projectRoot, request, response, options.throttleBytes, (n) => (sent += n));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host, resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    host: options.host,
    port,
    origin: `http://${options.host}:${port}`,
    requests,
    bytesSent: () => sent,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function gitHttpBackend(
  projectRoot: string,
  request: IncomingMessage,
  response: ServerResponse,
  throttleBytes: number | undefined,
  count: (bytes: number) => void,
): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  const body = Buffer.concat(chunks);
  const url = new URL(request.url ?? '/', 'http://backend');
  const cgi = spawn('git', ['http-backend'], {
    env: {
      PATH: process.env['PATH'] ?? '/usr/bin:/bin',
      GIT_PROJECT_ROOT: projectRoot,
      GIT_HTTP_EXPORT_ALL: '1',
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_CONFIG_GLOBAL: '/dev/null',
      REQUEST_METHOD: request.method ?? 'GET',
      PATH_INFO: decodeURIComponent(url.pathname),
      QUERY_STRING: url.search.slice(1),
      CONTENT_TYPE: request.headers['content-type'] ?? '',
      CONTENT_LENGTH: String(body.length),
      ...(request.headers['content-encoding'] ? { HTTP_CONTENT_ENCODING: request.headers['content-encoding'] } : {}),
      ...(typeof request.headers['git-protocol'] === 'string' ? { GIT_PROTOCOL: request.headers['git-protocol'] } : {}),
    },
  });
  // A backend that answers without reading the body (or is gone) closes its stdin early.
  cgi.stdin.on('error', () => undefined);
  cgi.stdin.end(body);
  let head = Buffer.alloc(0);
  let streaming = false;
  const send = (data: Buffer): void => {
    if (throttleBytes === undefined) {
      count(data.length);
      response.write(data);
      return;
    }
    cgi.stdout.pause();
    const write = (rest: Buffer): void => {
      if (response.destroyed) return void cgi.kill('SIGKILL');
      const part = rest.subarray(0, throttleBytes);
      count(part.length);
      response.write(part);
      setTimeout(() => (rest.length > throttleBytes ? write(rest.subarray(throttleBytes)) : cgi.stdout.resume()), 10);
    };
    write(data);
  };
  cgi.stdout.on('data', (chunk: Buffer) => {
    if (streaming) return send(chunk);
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf('\r\n\r\n');
    if (end === -1) return;
    for (const line of head.subarray(0, end).toString('latin1').split('\r\n')) {
      const colon = line.indexOf(':');
      const name = line.slice(0, colon).trim();
      const value = line.slice(colon + 1).trim();
      if (name.toLowerCase() === 'status') response.statusCode = Number.parseInt(value, 10);
      else response.setHeader(name, value);
    }
    streaming = true;
    send(head.subarray(end + 4));
  });
  cgi.stdout.on('end', () => response.end());
}
