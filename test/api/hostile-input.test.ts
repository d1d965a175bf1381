/**
 * A black-box sweep of the API's inputs: for every route the OpenAPI document lists, every
 * string field of its body (and of the schemas that take anything: an agent card's extra fields,
 * its skills, capability names) and every string path and query parameter gets NUL, a control
 * character, an escape, a line separator and a lone surrogate. The answer is a 2xx or a 400
 * whose `issues` name the field, never a 5xx; identifiers, sources, URLs, reasons and commands
 * are refused, free text from runtimes is accepted (and escaped where it is shown, see
 * workflows/operator-view.ts). Every workspace the sweep touched still answers afterwards.
 * Runs against the real time-skipping Temporal server, a real worker (mocked box activities)
 * and real PostgreSQL.
 */
import type { InjectOptions } from 'fastify';
import type { OpenAPIV3 } from 'openapi-types';
import { describe, expect, it } from 'vitest';
import { startFleetLiveness } from '../../worker.js';
import { admin, agentUrl, useApiHarness } from '../helpers/api.js';
import { uniqueId } from '../helpers/worker.js';

const harness = useApiHarness('hostile-input');

/** What each character class is, for the test names. */
const hostile: Record<string, string> = {
  NUL: '\u0000',
  'U+0001': '\u0001',
  ESC: '\u001b[31m',
  'LINE SEPARATOR': '\u2028',
  'lone surrogate': '\ud800',
};

/** The fields a runtime fills with its own text: accepted as sent, escaped where shown. */
const freeText = [
  /^body\.sample_error$/,
  /^body\.current_task$/,
  /^body\.agent_card\.(name|description|version)$/,
  /^body\.agent_card\.skills\.0$/,
  /^body\.agent_card\.<extra field>$/,
  /^body\.agent_card\.<extra field name>$/,
  /^body\.runtime_metadata\.capabilities\.<extra field name>$/,
  // What the caller of dispatch-failed saw go wrong: its own words, never stored.
  /^body\.error$/,
];

/** A workspace for one route: created, registered, and its bearer token. */
interface Target {
  id: string;
  bearer: { authorization: string };
}

async function newTarget(): Promise<Target> {
  const id = uniqueId('hostile');
  const created = await harness.api.inject({ method: 'POST', url: '/workspaces', headers: admin, payload: { id } });
  expect(created.statusCode, created.body).toBe(201);
  const bearer = { authorization: `Bearer ${created.json<{ auth_token: string }>().auth_token}` };
  const registered = await harness.api.inject({
    method: 'POST',
    url: '/registry/register',
    headers: bearer,
    payload: { id, url: agentUrl, agent_card: { name: 'agent' }, delivery_mode: 'push' },
  });
  expect(registered.statusCode, registered.body).toBe(200);
  return { id, bearer };
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * A valid call of each route, every optional field filled, so each string field is reached.
 * `stream`: the valid call's answer does not end (test/api/events.test.ts reads it), so only the
 * hostile calls are made.
 */
const examples: Record<
  string,
  (t: Target) => { headers: Record<string, string>; body?: Json; query?: string; stream?: true }
> = {
  'POST /registry/register': (t) => ({
    headers: t.bearer,
    body: {
      id: t.id,
      url: agentUrl,
      agent_card: {
        name: 'agent',
        description: 'an agent',
        version: '1.0.0',
        url: agentUrl,
        skills: ['seo'],
        'extra field': 'x',
      },
      delivery_mode: 'push',
      kind: 'workspace',
    },
  }),
  'POST /registry/heartbeat': (t) => ({
    headers: t.bearer,
    body: {
      workspace_id: t.id,
      error_rate: 0,
      sample_error: 'timeout',
      active_tasks: 1,
      current_task: 'summarising',
      uptime_seconds: 60,
      monthly_spend: 0,
      runtime_state: '',
      runtime_metadata: { capabilities: { status_mgmt: false }, idle_timeout_seconds: null },
      agent_card: { name: 'agent', description: 'an agent', version: '1.0.0', skills: ['seo'], 'extra field': 'x' },
    },
  }),
  'POST /workspaces': () => ({
    headers: admin,
    body: {
      id: uniqueId('hostile-new'),
      plugins: [{ name: 'seo', source: 'gitea://acme/seo#main' }],
      initial_status: 'provisioning',
    },
  }),
  'GET /workspaces': () => ({ headers: admin, query: 'status=online&limit=10' }),
  'GET /workspaces/{id}': () => ({ headers: admin }),
  'DELETE /workspaces/{id}': () => ({ headers: admin }),
  'PUT /workspaces/{id}/plugins': () => ({
    headers: admin,
    body: { plugins: [{ name: 'seo', source: 'gitea://acme/seo#main' }] },
  }),
  'PUT /workspaces/{id}/box': () => ({
    headers: admin,
    body: {
      driver: 'ssh',
      host: 'box.example.test',
      port: 22,
      user: 'agent',
      key_ref: 'fleet-key',
      host_key: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBu6c1AEUIRMYuxTuJRqmzUj4Ahk8ccmWGLqgIihCU7Y',
      root: '/srv/boxes/agent',
      restart_command: 'systemctl restart agent',
      running_command: 'systemctl is-active agent',
      stop_command: 'systemctl stop agent',
    },
  }),
  'POST /workspaces/{id}/reconcile': () => ({ headers: admin, body: { refresh: false } }),
  'POST /workspaces/{id}/restart': () => ({ headers: admin, body: { reason: 'operator request' } }),
  'POST /workspaces/{id}/cordon': () => ({ headers: admin, body: { reason: 'incident' } }),
  'POST /workspaces/{id}/uncordon': () => ({ headers: admin }),
  'POST /workspaces/{id}/dispatch-failed': () => ({ headers: admin, body: { caller: 'a2a', error: 'timeout' } }),
  'GET /events': (t) => ({ headers: admin, query: `workspace=${t.id}&after=0`, stream: true }),
  'GET /healthz': () => ({ headers: {} }),
  'GET /readyz': () => ({ headers: {} }),
  'GET /fleet': () => ({ headers: admin }),
  'POST /fleet/pause': () => ({ headers: admin, body: { reason: 'database failover', by: 'ops@example' } }),
  'POST /fleet/resume': () => ({ headers: admin, body: { by: 'ops@example' } }),
};

type Schema = OpenAPIV3.SchemaObject;

/**
 * Where a string can go in a body, as paths of keys (array items at index 0). A schema that takes
 * anything (`{}`: an agent card's extra fields, its skills) takes a string too; an object with
 * extra fields also takes an extra field's name (marked `<extra field name>`).
 */
function stringFields(schema: Schema, path: string[] = []): string[][] {
  const options = [...(schema.anyOf ?? []), ...(schema.oneOf ?? [])] as Schema[];
  if (options.length > 0) return dedupe(options.flatMap((option) => stringFields(option, path)));
  if (schema.type === 'string' || Object.keys(schema).length === 0) return [path];
  if (schema.type === 'array') return stringFields(schema.items as Schema, [...path, '0']);
  if (schema.type !== 'object') return [];
  const fields = Object.entries(schema.properties ?? {}).flatMap(([key, child]) =>
    stringFields(child as Schema, [...path, key]),
  );
  const extra = schema.additionalProperties;
  if (extra !== undefined && extra !== false) {
    fields.push([...path, '<extra field name>']);
    if (extra === true || Object.keys(extra).length === 0) fields.push([...path, '<extra field>']);
  }
  return fields;
}

function dedupe(paths: string[][]): string[][] {
  return [...new Map(paths.map((path) => [path.join('.'), path])).values()];
}

/** The example body with the hostile text in the field at `path` (inside its valid value, if any). */
function inject(body: Json, path: string[], text: string, place: Place): Json {
  const copy = structuredClone(body);
  let node = copy as Record<string, Json>;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    node[key] = next !== null && typeof next === 'object' ? next : {};
    node = node[key] as Record<string, Json>;
  }
  const last = path.at(-1) ?? '';
  if (last === '<extra field name>') {
    const sample = Object.values(node).find((value) => typeof value === 'boolean') ?? 'x';
    node[`extra${text}field`] = sample;
  } else if (last === '<extra field>') node['extra field'] = `x${text}y`;
  else node[last] = embed(node[last], text, place);
  return copy;
}

/** Where in a valid value the hostile text goes: after its first character, or at its end. */
type Place = 'inside' | 'at the end';

function embed(value: Json | undefined, text: string, place: Place): string {
  const valid = typeof value === 'string' && value.length > 0 ? value : 'xy';
  return place === 'inside' ? `${valid.slice(0, 1)}${text}${valid.slice(1)}` : `${valid}${text}`;
}

/**
 * Percent-encoded, a lone surrogate too: as the three bytes its code unit would take in UTF-8
 * (which no valid UTF-8 holds), where encodeURIComponent throws.
 */
function encodeParam(text: string): string {
  let encoded = '';
  // for-of walks code points: a pair stays whole, a lone surrogate comes alone.
  for (const char of text) {
    const unit = char.charCodeAt(0);
    if (char.length > 1 || unit < 0xd800 || unit > 0xdfff) encoded += encodeURIComponent(char);
    else
      encoded += [0xe0 | (unit >> 12), 0x80 | ((unit >> 6) & 0x3f), 0x80 | (unit & 0x3f)]
        .map((byte) => `%${byte.toString(16).toUpperCase()}`)
        .join('');
  }
  return encoded;
}

/**
 * Whether an issue's field names the injected one: itself or a part of it, or for a path
 * parameter `params` (the router refuses a path it cannot decode before it knows which parameter).
 */
function names(issueField: string, field: string): boolean {
  return (
    issueField === field ||
    issueField.startsWith(`${field}.`) ||
    (field.startsWith('params.') && issueField === 'params')
  );
}

interface Call {
  name: string;
  field: string;
  request: InjectOptions;
}

/** Every hostile call of one route: each body field, path parameter and query parameter. */
function hostileCalls(route: string, operation: OpenAPIV3.OperationObject, target: Target): Call[] {
  const [method, template] = route.split(' ') as [InjectOptions['method'], string];
  const example = examples[route]?.(target);
  if (example === undefined) throw new Error(`no example call for ${route}: add one to the sweep`);
  const url = (id: string, query = example.query): string =>
    template.replace('{id}', encodeParam(id)) + (query === undefined ? '' : `?${query}`);
  const calls: Call[] = [];
  const places: Place[] = ['inside', 'at the end'];
  for (const [character, text] of Object.entries(hostile))
    for (const place of places) {
      const label = `${character} ${place}`;
      const parameters = (operation.parameters ?? []) as OpenAPIV3.ParameterObject[];
      // Path and query parameters; a header (GET /events' Last-Event-ID) cannot carry these characters.
      const strings = parameters.filter(
        (p) => (p.in === 'path' || p.in === 'query') && (p.schema as Schema | undefined)?.type === 'string',
      );
      for (const parameter of strings) {
        const field = `${parameter.in === 'path' ? 'params' : 'querystring'}.${parameter.name}`;
        const request: InjectOptions = { method, headers: example.headers };
        if (parameter.in === 'path') request.url = url(embed(target.id, text, place));
        else {
          const query = new URLSearchParams(example.query);
          const value = embed(query.get(parameter.name) ?? '', text, place);
          query.delete(parameter.name);
          const rest = query.toString();
          request.url = url(target.id, `${rest === '' ? '' : `${rest}&`}${parameter.name}=${encodeParam(value)}`);
        }
        if (example.body !== undefined) request.payload = example.body as object;
        calls.push({ name: `${route} ${field} ${label}`, field, request });
      }
      const body = operation.requestBody as OpenAPIV3.RequestBodyObject | undefined;
      const schema = body?.content['application/json']?.schema as Schema | undefined;
      if (schema === undefined || example.body === undefined) continue;
      for (const path of stringFields(schema)) {
        const field = ['body', ...path].join('.');
        calls.push({
          name: `${route} ${field} ${label}`,
          field,
          request: {
            method,
            url: url(target.id),
            headers: { ...example.headers, 'content-type': 'application/json' },
            // JSON.stringify writes a lone surrogate as its \ud800 escape: the JSON is well formed.
            payload: JSON.stringify(inject(example.body, path, text, place)),
          },
        });
      }
    }
  return calls;
}

describe('hostile text in every field of every route', () => {
  it('is a 2xx or a 400 naming the field, never a 5xx; only runtime free text is accepted', async () => {
    await startFleetLiveness(harness.env.client, harness.taskQueue, { sweepEveryMs: 60_000 });
    const doc = (await harness.api.inject({ method: 'GET', url: '/openapi.json' })).json<OpenAPIV3.Document>();
    const routes = Object.entries(doc.paths).flatMap(([template, item]) =>
      Object.entries(item ?? {}).map(([method, operation]) => ({
        route: `${method.toUpperCase()} ${template}`,
        operation: operation as OpenAPIV3.OperationObject,
      })),
    );
    expect(routes.map((r) => r.route).sort()).toEqual(Object.keys(examples).sort());

    const wrong: string[] = [];
    const targets = new Map<string, Target>();
    let accepted = 0;
    for (const { route, operation } of routes) {
      const target = await newTarget();
      targets.set(route, target);
      for (const call of hostileCalls(route, operation, target)) {
        const res = await harness.api.inject(call.request);
        const answer = `${res.statusCode} ${res.body.slice(0, 300)}`;
        const free = freeText.some((pattern) => pattern.test(call.field));
        if (res.statusCode >= 200 && res.statusCode < 300) {
          accepted++;
          if (!free) wrong.push(`${call.name}: accepted (${answer}), but only runtime free text may be`);
          continue;
        }
        if (res.statusCode !== 400) {
          wrong.push(`${call.name}: ${answer}`);
          continue;
        }
        const issues = res.json<{ issues?: { field: string }[] }>().issues ?? [];
        if (free) wrong.push(`${call.name}: refused (${answer}), but it is runtime free text`);
        else if (!issues.some((issue) => names(issue.field, call.field)))
          wrong.push(`${call.name}: 400 without an issue naming ${call.field} (${answer})`);
      }
      // The route's valid call, last: the sweep's refusals are not the example's own.
      const example = examples[route]?.(target);
      if (example?.stream === true) continue;
      const [method, template] = route.split(' ') as [InjectOptions['method'], string];
      const ok = await harness.api.inject({
        method,
        url: template.replace('{id}', target.id) + (example?.query === undefined ? '' : `?${example.query}`),
        headers: example?.headers ?? {},
        ...(example?.body === undefined ? {} : { payload: example.body as object }),
      });
      if (ok.statusCode >= 300) wrong.push(`${route} valid call: ${ok.statusCode} ${ok.body.slice(0, 300)}`);
    }
    expect(wrong).toEqual([]);
    expect(accepted).toBeGreaterThan(0);

    // What was accepted did not break a workspace: each still answers its state (a workflow
    // whose tasks failed on it would be 502) and heartbeats; all but the one the sweep removed.
    targets.delete('DELETE /workspaces/{id}');
    for (const target of targets.values()) {
      const view = await harness.api.inject({ method: 'GET', url: `/workspaces/${target.id}`, headers: admin });
      expect(view.statusCode, view.body).toBe(200);
      const beat = await harness.api.inject({
        method: 'POST',
        url: '/registry/heartbeat',
        headers: target.bearer,
        payload: { workspace_id: target.id },
      });
      expect(beat.statusCode, beat.body).toBe(200);
    }
  });
});
