/**
 * The URLs the API takes from runtimes and operators, through the real API, the real workflow
 * (time-skipping server) and real PostgreSQL: what the guard refuses is 400 naming the field;
 * what it approves is stored, projected and shown in the form it checked.
 */
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApi } from '../../api/server.js';
import { workspaceWorkflowId } from '../../workflows/definitions.js';
import { admin, testApiSettings, useApiHarness } from '../helpers/api.js';
import { readProjection } from '../helpers/postgres.js';
import { uniqueId, waitForState } from '../helpers/worker.js';

const harness = useApiHarness('url-tests');
/**
 * Git sources only to plugins.example.test and 93.184.216.34. The harness's API has no host
 * allow-list (the default): the address guard alone decides.
 */
let listed: FastifyInstance;

beforeAll(async () => {
  listed = await buildApi(
    harness.env.client,
    harness.store,
    testApiSettings(harness.taskQueue, { sourceHosts: ['plugins.example.test', '93.184.216.34'] }),
  );
});

afterAll(() => listed.close());

async function createWorkspace(): Promise<{ id: string; bearer: { authorization: string } }> {
  const id = uniqueId('urls');
  const res = await harness.api.inject({ method: 'POST', url: '/workspaces', headers: admin, payload: { id } });
  expect(res.statusCode, res.body).toBe(201);
  return { id, bearer: { authorization: `Bearer ${res.json<{ auth_token: string }>().auth_token}` } };
}

describe('register URLs', () => {
  it.each([
    // WHATWG reads host 169.254.169.254 with user-info "93.184.215.14\"; other parsers read 93.184.215.14.
    ['backslash before @', 'http://93.184.215.14\\@169.254.169.254/latest/', 'push'],
    ['backslash in the path', 'http://93.184.215.14/a\\b', 'push'],
    ['user-info', 'http://user:pass@93.184.216.34/', 'push'],
    ['an empty user-info', 'http://@93.184.216.34/', 'push'],
    ['a tab in the host', 'http://93.184.216.34\t.nip.io/', 'push'],
    ['cloud metadata as a decimal number', 'http://2852039166/', 'push'],
    ['cloud metadata in octal', 'http://0251.0376.0251.0376/', 'push'],
    ['a poll-mode register to cloud metadata', 'http://169.254.169.254/latest/', 'poll'],
    ['6to4 (2002::/16)', 'http://[2002:a9fe:a9fe::1]/', 'push'],
    ['NAT64 local-use (64:ff9b:1::/48)', 'http://[64:ff9b:1::a9fe:a9fe]/', 'push'],
    ['documentation (2001:db8::/32)', 'http://[2001:db8::1]/', 'push'],
    ['discard-only (100::/64)', 'http://[100::1]/', 'push'],
    ['site-local (fec0::/10)', 'http://[fec0::1]/', 'push'],
    ['IPv4-mapped metadata, hex spelling', 'http://[::ffff:a9fe:a9fe]/', 'push'],
  ])('refuses %s: 400 naming body.url', async (_, url, mode) => {
    const { id, bearer } = await createWorkspace();
    const res = await harness.api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: bearer,
      payload: { id, url, agent_card: { name: 'a' }, delivery_mode: mode },
    });
    expect(res.statusCode, res.body).toBe(400);
    expect(res.json<{ issues: { field: string }[] }>().issues.map((issue) => issue.field)).toEqual(['body.url']);
  });

  it('the URL the workflow stores and projects is the normalised form the guard checked', async () => {
    const { id, bearer } = await createWorkspace();
    const res = await harness.api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: bearer,
      payload: { id, url: 'HTTP://0x5DB8D822:8000/a/./b/../agent', agent_card: { name: 'a' }, delivery_mode: 'push' },
    });
    expect(res.statusCode, res.body).toBe(200);
    const handle = harness.env.client.workflow.getHandle(workspaceWorkflowId(id));
    const state = await waitForState(handle, (s) => s.counters.registers === 1);
    expect(state.url).toBe('http://93.184.216.34:8000/a/agent');
    await expect
      .poll(async () => (await readProjection(harness.store, id))?.url)
      .toBe('http://93.184.216.34:8000/a/agent');
    const shown = await harness.api.inject({ method: 'GET', url: `/workspaces/${id}`, headers: admin });
    expect(shown.json<{ url: string }>().url).toBe('http://93.184.216.34:8000/a/agent');
  });

  it('an agent card URL is stored normalised too, in poll mode as in push mode', async () => {
    const { id, bearer } = await createWorkspace();
    const res = await harness.api.inject({
      method: 'POST',
      url: '/registry/register',
      headers: bearer,
      payload: { id, agent_card: { name: 'a', url: 'https://93.184.216.34:443/card' }, delivery_mode: 'poll' },
    });
    expect(res.statusCode, res.body).toBe(200);
    const handle = harness.env.client.workflow.getHandle(workspaceWorkflowId(id));
    const state = await waitForState(handle, (s) => s.counters.registers === 1);
    expect(state.url).toBe('https://93.184.216.34/card');
  });
});

describe('plugin sources', () => {
  /** Declares one plugin, named as its source names it, so only the source's location is judged. */
  async function declare(api: FastifyInstance, source: string): Promise<{ status: number; body: string }> {
    const name = /([^/]+)\.git#/.exec(source)?.[1] ?? 'x';
    const res = await api.inject({
      method: 'POST',
      url: '/workspaces',
      headers: admin,
      payload: { id: uniqueId('src'), plugins: [{ name, source }] },
    });
    return { status: res.statusCode, body: res.body };
  }

  it.each([
    ['cloud metadata', 'git+http://169.254.169.254/x.git#main'],
    ['cloud metadata as a decimal number', 'git+http://2852039166/x.git#main'],
    ['cloud metadata in hex', 'git+https://0xa9fea9fe/x.git#main'],
    ['loopback', 'git+http://127.0.0.1:9/x.git#main'],
    ['a backslash before @', 'git+https://93.184.216.34\\@127.0.0.1:9/x.git#main'],
    ['user-info', 'git+https://user:secret@93.184.216.34/x.git#main'],
    ['a malformed percent-escape', 'git+https://93.184.216.34/%zz/x.git#main'],
    ['a control character', 'git+https://93.184.216.34/a\u0001/x.git#main'],
  ])('with no host list, refuses %s: 400 naming body.plugins.0.source', async (_, source) => {
    const { status, body } = await declare(harness.api, source);
    expect(status, body).toBe(400);
    expect(JSON.parse(body)).toMatchObject({ issues: [{ field: 'body.plugins.0.source' }] });
  });

  it.each([
    ['a backslash that hides the host git dials', 'git+https://plugins.example.test\\@127.0.0.1:9/r.git#main'],
    ['user-info naming the listed host', 'git+https://plugins.example.test@127.0.0.1:9/r.git#main'],
    ['a listed address literal that is the metadata one in another spelling', 'git+http://0xa9fea9fe/x.git#main'],
  ])('with a host list, refuses %s', async (_, source) => {
    const { status, body } = await declare(listed, source);
    expect(status, body).toBe(400);
    expect(JSON.parse(body)).toMatchObject({ issues: [{ field: 'body.plugins.0.source' }] });
  });

  it.each([
    ['a malformed percent-escape', 'git+file:///srv/plugins/%E0%A4%A/x.git#main'],
    ['escapes that are not UTF-8', 'git+file:///srv/plugins/%C3/x.git#main'],
    ['an escaped slash', 'git+file:///srv/plugins/a%2F..%2F..%2Fetc/x.git#main'],
  ])('%s in a git+file source is a 400, not a 500', async (_, source) => {
    const { status, body } = await declare(harness.api, source);
    expect(status, body).toBe(400);
    expect(JSON.parse(body)).toMatchObject({ issues: [{ field: 'body.plugins.0.source' }] });
  });

  it('a public git host is accepted, with or without a list naming it', async () => {
    expect((await declare(harness.api, 'git+https://93.184.216.34/acme/x.git#main')).status).toBe(201);
    expect((await declare(listed, 'git+https://93.184.216.34/acme/x.git#main')).status).toBe(201);
  });
});
