/**
 * A table of bad inputs over every route: each answers with its status and a named field, and
 * sends no signal and writes no row.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { agentUrl, registerBody, TEST_ADMIN_TOKEN, useApiHarness } from '../helpers/api.js';
import { heartbeatPayload } from '../helpers/payloads.js';

// A database of its own: its tests assert that no row was written anywhere.
const harness = useApiHarness('bad-input-tests', {
  database: 'api',
  sources: { sourceHosts: ['plugins.example.test'] },
});

describe('bad input: a clear error, no signal, no row', () => {
  let target: { id: string; token: string };
  beforeAll(async () => {
    target = await harness.createWorkspace();
  });
  const big = 'x'.repeat(70 * 1024);
  /** Arrays nested 20,000 deep: 40 KB of JSON, within the body limit. */
  const deep = '['.repeat(20_000) + ']'.repeat(20_000);

  interface BadCase {
    name: string;
    method: 'POST' | 'GET' | 'PUT' | 'DELETE';
    url: (id: string) => string;
    body?: (id: string) => unknown;
    raw?: string;
    contentType?: string;
    auth?: 'admin' | 'runtime' | 'none' | 'wrong-admin';
    status: number;
    /** Substring of the error, or of one issue's `field: problem`. */
    says: string;
  }
  const register =
    (patch: (id: string) => Record<string, unknown>): ((id: string) => unknown) =>
    (id) => ({
      ...registerBody(id),
      ...patch(id),
    });
  const heartbeat =
    (patch: Record<string, unknown>): ((id: string) => unknown) =>
    (id) => ({
      ...heartbeatPayload(id),
      ...patch,
    });
  const cases: BadCase[] = [
    {
      name: 'malformed JSON',
      method: 'POST',
      url: () => '/registry/register',
      raw: '{"id": ',
      status: 400,
      says: 'body: Body is not valid JSON',
    },
    {
      name: 'malformed JSON on heartbeat',
      method: 'POST',
      url: () => '/registry/heartbeat',
      raw: '{"workspace_id": "x",',
      status: 400,
      says: 'body: ',
    },
    {
      name: 'malformed JSON on declared plugins',
      method: 'PUT',
      url: (id) => `/workspaces/${id}/plugins`,
      raw: '{"plugins": [}',
      status: 400,
      says: 'body: ',
    },
    {
      name: 'plugin source file:///etc (unknown scheme)',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-9', plugins: [{ name: 'etc', source: 'file:///etc' }] }),
      status: 400,
      says: 'body.plugins.0.source: ',
    },
    {
      name: 'unpinned git+file source',
      method: 'PUT',
      url: (id) => `/workspaces/${id}/plugins`,
      body: () => ({ plugins: [{ name: 'repo', source: 'git+file:///srv/plugins/repo.git' }] }),
      status: 400,
      says: 'body.plugins.0.source: plugin source git+file:///srv/plugins/repo.git is unpinned',
    },
    {
      name: 'git+file source outside the allowed directories',
      method: 'PUT',
      url: (id) => `/workspaces/${id}/plugins`,
      body: () => ({ plugins: [{ name: 'repo', source: 'git+file:///srv/plugins/../secrets/repo.git#main' }] }),
      status: 400,
      says: '/srv/secrets/repo.git is outside the directories git+file:// sources may read',
    },
    {
      name: 'git+https source on a host not allowed',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-10', plugins: [{ name: 'x', source: 'git+https://attacker.test/x.git#main' }] }),
      status: 400,
      says: 'host attacker.test is not one git sources may name',
    },
    {
      name: 'agent_card.url is cloud metadata',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: undefined, agent_card: { name: 'x', url: 'http://169.254.169.254/' } })),
      status: 400,
      says: 'body.agent_card.url: resolves to 169.254.169.254',
    },
    {
      name: 'body is an array',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: () => [1, 2],
      status: 400,
      says: 'body',
    },
    {
      name: 'register without id',
      method: 'POST',
      url: () => '/registry/register',
      body: (id) => ({ url: agentUrl, agent_card: {}, id: undefined, x: id }),
      status: 400,
      says: 'body.id',
    },
    {
      name: 'register id is a number',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ id: 42 })),
      status: 400,
      says: 'body.id',
    },
    {
      name: 'register without agent_card',
      method: 'POST',
      url: () => '/registry/register',
      body: (id) => ({ id, url: agentUrl }),
      status: 400,
      says: 'body.agent_card',
    },
    {
      name: 'agent_card is a string',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ agent_card: 'card' })),
      status: 400,
      says: 'body.agent_card',
    },
    {
      name: 'url is ftp',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: 'ftp://box/agent' })),
      status: 400,
      says: 'must be an http(s) URL',
    },
    {
      name: 'url is javascript:',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: 'javascript:alert(1)' })),
      status: 400,
      says: 'body.url',
    },
    {
      name: 'delivery_mode pull',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ delivery_mode: 'pull' })),
      status: 400,
      says: 'body.delivery_mode',
    },
    {
      name: 'kind admin',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ kind: 'admin' })),
      status: 400,
      says: 'body.kind',
    },
    {
      name: 'push mode without a url',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: '' })),
      status: 400,
      says: 'url is required for push-mode',
    },
    {
      name: 'url is cloud metadata',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: 'http://169.254.169.254/latest' })),
      status: 400,
      says: 'body.url: resolves to 169.254.169.254, in 169.254.0.0/16 Link Local',
    },
    {
      name: 'url is loopback',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: 'http://127.0.0.1:8000' })),
      status: 400,
      says: 'loopback',
    },
    {
      name: 'url is multicast',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: 'http://224.0.0.1/' })),
      status: 400,
      says: 'Multicast',
    },
    {
      name: 'url is IPv6 link-local',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: 'http://[fe80::1]:8000/' })),
      status: 400,
      says: 'Link-Local',
    },
    {
      name: 'url is private',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: 'http://10.1.2.3:8000/' })),
      status: 400,
      says: 'private',
    },
    {
      name: 'register for an unknown workspace with a token of another',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ id: 'nobody-here' })),
      status: 403,
      says: 'token belongs to another workspace',
    },
    {
      name: 'register for an unknown workspace without a token',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ id: 'nobody-here' })),
      auth: 'none',
      status: 401,
      says: 'missing or invalid credentials',
    },
    {
      name: 'oversized body',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ agent_card: { description: big } })),
      status: 413,
      says: 'too large',
    },
    {
      name: 'text/plain body',
      method: 'POST',
      url: () => '/registry/heartbeat',
      raw: 'hello',
      contentType: 'text/plain',
      status: 415,
      says: 'Unsupported Media Type',
    },
    {
      name: 'heartbeat without workspace_id',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: () => ({ error_rate: 0 }),
      status: 400,
      says: 'body.workspace_id',
    },
    {
      name: 'error_rate above 1',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ error_rate: 2 }),
      status: 400,
      says: 'body.error_rate',
    },
    {
      name: 'error_rate is a string',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ error_rate: 'high' }),
      status: 400,
      says: 'body.error_rate',
    },
    {
      name: 'active_tasks negative',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ active_tasks: -1 }),
      status: 400,
      says: 'body.active_tasks',
    },
    {
      name: 'active_tasks fractional',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ active_tasks: 1.5 }),
      status: 400,
      says: 'body.active_tasks',
    },
    {
      name: 'runtime_state unknown',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ runtime_state: 'dead' }),
      status: 400,
      says: 'body.runtime_state',
    },
    {
      name: 'monthly_spend negative',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ monthly_spend: -5 }),
      status: 400,
      says: 'body.monthly_spend',
    },
    {
      name: 'capability not a boolean',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ runtime_metadata: { capabilities: { retry: 'yes' } } }),
      status: 400,
      says: 'body.runtime_metadata.capabilities.retry',
    },
    {
      name: 'heartbeat for an unknown workspace with a token of another',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ workspace_id: 'nobody-here' }),
      status: 403,
      says: 'token belongs to another workspace',
    },
    {
      name: 'heartbeat for an unknown workspace without a token',
      method: 'POST',
      url: () => '/registry/heartbeat',
      body: heartbeat({ workspace_id: 'nobody-here' }),
      auth: 'none',
      status: 401,
      says: 'missing or invalid credentials',
    },
    {
      name: 'admin route without a token',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-1' }),
      auth: 'none',
      status: 401,
      says: 'admin token required',
    },
    {
      name: 'admin route with a wrong token',
      method: 'GET',
      url: () => '/workspaces',
      auth: 'wrong-admin',
      status: 401,
      says: 'admin token required',
    },
    {
      name: 'plugin name with ..',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-2', plugins: [{ name: '..', source: 'local://x' }] }),
      status: 400,
      says: 'body.plugins.0.name',
    },
    {
      name: 'plugin name with a slash',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-3', plugins: [{ name: 'a/b', source: 'local://a' }] }),
      status: 400,
      says: 'body.plugins.0.name',
    },
    {
      name: 'unknown field on create',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-4', owner: 'me' }),
      status: 400,
      says: 'owner',
    },
    {
      name: 'duplicate plugin names',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({
        id: 'fresh-5',
        plugins: [
          { name: 'a', source: 'local://a' },
          { name: 'a', source: 'local://a' },
        ],
      }),
      status: 400,
      says: 'unique',
    },
    {
      name: 'plugin source with an unknown scheme',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-6', plugins: [{ name: 'a', source: 'svn://x/a#1' }] }),
      status: 400,
      says: 'body.plugins.0.source: plugin source svn://x/a#1: unknown scheme svn://',
    },
    {
      name: 'unpinned plugin source',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-7', plugins: [{ name: 'seo', source: 'gitea://acme/seo' }] }),
      status: 400,
      says: 'unpinned',
    },
    {
      name: 'plugin name disagrees with its source',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-8', plugins: [{ name: 'seo', source: 'gitea://acme/other#main' }] }),
      status: 400,
      says: 'names the plugin other',
    },
    {
      name: 'workspace id with a space',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'has space' }),
      status: 400,
      says: 'body.id',
    },
    {
      name: 'list with an unknown status',
      method: 'GET',
      url: () => '/workspaces?status=bogus',
      status: 400,
      says: 'querystring.status',
    },
    {
      name: 'state of an unknown workspace',
      method: 'GET',
      url: () => '/workspaces/nobody-here',
      status: 404,
      says: 'unknown workspace',
    },
    {
      name: 'restart with an unknown field',
      method: 'POST',
      url: (id) => `/workspaces/${id}/restart`,
      body: () => ({ force: true }),
      status: 400,
      says: 'force',
    },
    {
      name: 'reconcile with a refresh that is not a boolean',
      method: 'POST',
      url: (id) => `/workspaces/${id}/reconcile`,
      body: () => ({ refresh: 'yes' }),
      status: 400,
      says: 'refresh',
    },
    {
      name: 'reconcile an unknown workspace',
      method: 'POST',
      url: () => '/workspaces/nobody-here/reconcile',
      body: () => ({}),
      status: 404,
      says: 'unknown workspace',
    },
    {
      name: 'dispatch-failed for an unknown workspace',
      method: 'POST',
      url: () => '/workspaces/nobody-here/dispatch-failed',
      body: () => ({}),
      status: 404,
      says: 'unknown workspace',
    },
    {
      name: 'declare plugins for an unknown workspace',
      method: 'PUT',
      url: () => '/workspaces/nobody-here/plugins',
      body: () => ({ plugins: [] }),
      status: 404,
      says: 'unknown workspace',
    },
    {
      name: 'delete an unknown workspace',
      method: 'DELETE',
      url: () => '/workspaces/nobody-here',
      status: 404,
      says: 'unknown workspace',
    },
    {
      name: 'invalid id in the path',
      method: 'POST',
      url: () => '/workspaces/bad%20id/restart',
      body: () => ({}),
      status: 400,
      says: 'params.id',
    },
    {
      name: 'a path parameter whose percent-encoding is not UTF-8 (a lone surrogate)',
      method: 'POST',
      url: () => '/workspaces/ws%ED%A0%80/restart',
      body: () => ({}),
      status: 400,
      says: 'params: a path parameter is not percent-encoded UTF-8',
    },
    {
      name: 'a path parameter past the router limit',
      method: 'GET',
      url: () => `/workspaces/${'a'.repeat(600)}`,
      status: 400,
      says: 'params: a path parameter is longer than',
    },
    {
      name: 'plugin source ending in NUL (PostgreSQL cannot store it)',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({ id: 'fresh-nul', plugins: [{ name: 'seo', source: 'gitea://acme/seo#main\u0000' }] }),
      status: 400,
      says: 'body.plugins.0.source: must not contain control',
    },
    {
      name: 'git+https plugin source with NUL in its path (the URL parser keeps it)',
      method: 'POST',
      url: () => '/workspaces',
      body: () => ({
        id: 'fresh-nul-path',
        plugins: [
          {
            name: 'seo',
            source: 'git+https://plugins.example.test/ac\u0000me/seo.git#0123456789abcdef0123456789abcdef01234567',
          },
        ],
      }),
      status: 400,
      says: 'body.plugins.0.source: must not contain control',
    },
    {
      name: 'declared plugin source with an escape sequence',
      method: 'PUT',
      url: (id) => `/workspaces/${id}/plugins`,
      body: () => ({ plugins: [{ name: 'seo', source: 'gitea://acme/seo#\u001b[2Jmain' }] }),
      status: 400,
      says: 'body.plugins.0.source: must not contain control',
    },
    {
      name: 'an SSH box command holding NUL',
      method: 'PUT',
      url: (id) => `/workspaces/${id}/box`,
      body: () => ({
        driver: 'ssh',
        host: 'box.example.test',
        user: 'agent',
        key_ref: 'fleet-key',
        host_key: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHcUu9gOeOeNK4Jc8Q6kG0xB9Z9nC9ZkcdYPh6lqfA8x',
        root: '/srv/boxes/agent',
        restart_command: 'systemctl restart agent\u0000',
        running_command: 'systemctl is-active agent',
      }),
      status: 400,
      says: 'body.restart_command: must not contain control',
    },
    {
      name: 'a restart reason holding a line separator',
      method: 'POST',
      url: (id) => `/workspaces/${id}/restart`,
      body: () => ({ reason: 'disk full\u2028# Status: online' }),
      status: 400,
      says: 'body.reason: must not contain control',
    },
    {
      // Only `npm start`'s recreate, through Temporal, may say it is an operator's look.
      name: 'a dispatch-failed caller claiming to be an operator, past the fleet budget',
      method: 'POST',
      url: (id) => `/workspaces/${id}/dispatch-failed`,
      body: () => ({ caller: 'a2a', operator: true }),
      status: 400,
      says: 'operator',
    },
    {
      name: 'a dispatch-failed caller holding NUL',
      method: 'POST',
      url: (id) => `/workspaces/${id}/dispatch-failed`,
      body: () => ({ caller: 'a2a\u0000' }),
      status: 400,
      says: 'body.caller: must not contain control',
    },
    {
      name: 'register with a URL holding a control character',
      method: 'POST',
      url: () => '/registry/register',
      body: register(() => ({ url: 'http://93.184.216.34:8000/\u0001' })),
      status: 400,
      says: 'body.url',
    },
    {
      name: 'register with an agent card nested past the limit',
      method: 'POST',
      url: () => '/registry/register',
      raw: `{"id": "deep-card", "agent_card": {"name": "deep", "extra": ${deep}}}`,
      status: 400,
      says: 'body.agent_card: Too deep',
    },
    {
      name: 'heartbeat with an agent card nested past the limit',
      method: 'POST',
      url: () => '/registry/heartbeat',
      raw: `{"workspace_id": "deep-card", "agent_card": {"skills": [${deep}]}}`,
      status: 400,
      says: 'body.agent_card: Too deep',
    },
  ];

  it(`has at least 30 cases (${cases.length})`, () => {
    expect(cases.length).toBeGreaterThanOrEqual(30);
  });

  it.each(cases)('$name → $status', async (c) => {
    const headers: Record<string, string> = {};
    const auth = c.auth ?? (c.url(target.id).startsWith('/registry') ? 'runtime' : 'admin');
    if (auth === 'admin') headers['authorization'] = `Bearer ${TEST_ADMIN_TOKEN}`;
    if (auth === 'wrong-admin') headers['authorization'] = 'Bearer definitely-not-the-admin-token';
    if (auth === 'runtime') headers['authorization'] = `Bearer ${target.token}`;
    if (c.contentType) headers['content-type'] = c.contentType;
    else if (c.raw !== undefined) headers['content-type'] = 'application/json';

    const signalsBefore = await harness.signalsReceived(target.id);
    const rowsBefore = await harness.rowCounts();
    const res = await harness.api.inject({
      method: c.method,
      url: c.url(target.id),
      headers,
      ...(c.raw !== undefined ? { payload: c.raw } : c.body ? { payload: c.body(target.id) as object } : {}),
    });
    expect(res.statusCode, res.body).toBe(c.status);
    const body = res.json<{ error: string; issues?: { field: string; problem: string }[] }>();
    const said = [body.error, ...(body.issues ?? []).map((i) => `${i.field}: ${i.problem}`)].join(' | ');
    expect(said).toContain(c.says);
    // One shape for every 400: the error and at least one named field with its problem.
    if (c.status === 400) {
      expect(body.issues?.length, res.body).toBeGreaterThan(0);
      for (const issue of body.issues ?? []) expect(issue.field).toMatch(/^(body|params|querystring)\b/);
    }
    expect(await harness.signalsReceived(target.id)).toBe(signalsBefore);
    expect(await harness.rowCounts()).toBe(rowsBefore);
  });
});
