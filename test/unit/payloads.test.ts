/**
 * The workflow's payload parsers (workflows/payloads.ts, no zod) and the API's zod schemas
 * (api/payload-schemas.ts) state one set of rules: on every payload here, valid or not, both
 * give the same verdict, and on valid ones the same value. The payloads vary one field at a time
 * over values of every JSON type and the edges of each limit.
 */
import { describe, expect, it } from 'vitest';
import { heartbeatPayloadSchema, registerPayloadSchema } from '../../api/payload-schemas.js';
import { limits, parseHeartbeat, parseRegister, type Parsed } from '../../workflows/payloads.js';

const long = (n: number): string => 'x'.repeat(n);

/** Objects and arrays nested `levels` deep (the outer one counts). */
const nested = (levels: number): unknown => {
  let value: unknown = 'leaf';
  for (let level = 0; level < levels; level++) value = level % 2 === 0 ? [value] : { deeper: value };
  return value;
};

/** Values of every JSON type, plus those that sit on a limit. */
const probes: unknown[] = [
  undefined,
  null,
  true,
  0,
  -1,
  0.5,
  1,
  1.5,
  2,
  Number.MAX_SAFE_INTEGER + 2,
  1e13,
  '',
  'x',
  'push',
  'poll',
  'wedged',
  'platform',
  'http://agent.example:8000',
  'ftp://agent.example',
  'https://',
  // Control and format characters, separators and a lone surrogate: refused in a URL or an id,
  // accepted in free text.
  'x\u0000y',
  'x\u001b[31my',
  'x\u2028y',
  'x\ud800y',
  'x\u202ey',
  'http://agent.example:8000/\u0000',
  'http://agent.example:8000/a\u0085b',
  'http://agent.example:8000/\u2028',
  'http://agent.example:8000/\udc00',
  'http://agent.\u200bexample:8000/',
  long(64),
  long(65),
  [],
  [1, 2],
  {},
  { a: 1 },
];

function variants(base: Record<string, unknown>, fields: string[], extra: Record<string, unknown[]>): unknown[] {
  const out: unknown[] = [base, null, [], 'text', 7, { ...base, unknown_field: 1 }];
  for (const field of fields) {
    for (const value of [...probes, ...(extra[field] ?? [])]) {
      // Absent (undefined) is left out, as JSON would.
      const payload = Object.fromEntries(
        Object.entries({ ...base, [field]: value }).filter(([, v]) => v !== undefined),
      );
      out.push(payload);
    }
  }
  return out;
}

/** JSON form (what a signal carries): undefined keys disappear. */
const plain = (value: unknown): unknown => JSON.parse(JSON.stringify(value)) as unknown;

function agree(
  payloads: unknown[],
  ours: (payload: unknown) => Parsed<unknown>,
  theirs: { safeParse: (payload: unknown) => { success: boolean; data?: unknown } },
): number {
  let valid = 0;
  for (const payload of payloads) {
    const a = ours(payload);
    const b = theirs.safeParse(payload);
    expect({ payload, ok: a.ok }).toEqual({ payload, ok: b.success });
    if (a.ok && b.success) {
      valid++;
      expect(plain(a.value)).toEqual(plain(b.data));
    }
    if (!a.ok) expect(a.reason).not.toBe('');
  }
  return valid;
}

const card = { name: 'agent', description: 'd', version: '1', url: 'http://agent.example:8000', skills: [{ id: 's' }] };
const cardVariants = variants(card, ['name', 'description', 'version', 'url', 'skills', 'extra'], {
  name: [long(limits.cardName), long(limits.cardName + 1)],
  description: [long(limits.cardDescription), long(limits.cardDescription + 1)],
  url: [`http://a/${long(limits.urlLength - 9)}`, `http://a/${long(limits.urlLength - 8)}`],
  // The card is level 1, its skills level 2: at the depth limit, past it, and far past it.
  skills: [
    new Array(limits.cardSkills).fill(1),
    new Array(limits.cardSkills + 1).fill(1),
    [nested(limits.cardDepth - 2)],
    [nested(limits.cardDepth - 1)],
    [nested(20_000)],
  ],
  extra: [nested(limits.cardDepth - 1), nested(limits.cardDepth), nested(20_000)],
});

describe('the workflow and the API validate payloads alike', () => {
  it('register', () => {
    const base = {
      id: 'ws-1',
      url: 'http://agent.example:8000',
      agent_card: card,
      delivery_mode: 'push',
      kind: 'workspace',
    };
    const payloads = [
      ...variants(base, ['id', 'url', 'agent_card', 'delivery_mode', 'kind'], {
        id: ['ws:1', '-ws', 'a'.repeat(128), 'a'.repeat(129), 'ws_1.b-2'],
      }),
      ...cardVariants.map((agentCard) => ({ ...base, agent_card: agentCard })),
    ];
    const valid = agree(payloads, parseRegister, registerPayloadSchema);
    expect(valid).toBeGreaterThan(20);
    expect(valid).toBeLessThan(payloads.length);
  });

  it('heartbeat', () => {
    const base = {
      workspace_id: 'ws-1',
      error_rate: 0.2,
      sample_error: 'e',
      active_tasks: 1,
      current_task: 't',
      uptime_seconds: 5,
      monthly_spend: 100,
      runtime_state: '',
      runtime_metadata: { capabilities: { status_mgmt: true }, idle_timeout_seconds: 60 },
      agent_card: card,
    };
    const fields = Object.keys(base);
    const payloads = [
      ...variants(base, fields, {
        sample_error: [long(limits.sampleError), long(limits.sampleError + 1)],
        current_task: [long(limits.currentTask), long(limits.currentTask + 1)],
        monthly_spend: [1e12, 1e12 + 1, 5e15],
        runtime_metadata: [
          { capabilities: { status_mgmt: 'yes' } },
          { capabilities: null },
          { idle_timeout_seconds: null },
          { idle_timeout_seconds: -1 },
          { idle_timeout_seconds: 1.5 },
          { other: 1 },
        ],
      }),
      ...cardVariants.map((agentCard) => ({ ...base, agent_card: agentCard })),
      { workspace_id: 'ws-1' },
    ];
    const valid = agree(payloads, parseHeartbeat, heartbeatPayloadSchema);
    expect(valid).toBeGreaterThan(20);
    expect(valid).toBeLessThan(payloads.length);
  });

  it('names the field and the problem', () => {
    expect(parseHeartbeat({ workspace_id: 'ws-1', error_rate: 2 })).toEqual({
      ok: false,
      reason: 'error_rate: Too big: expected number to be <=1',
    });
    expect(parseRegister({ id: 'ws-1', agent_card: { url: 'ftp://x' }, delivery_mode: 'carrier' })).toEqual({
      ok: false,
      reason: 'agent_card.url: must be an http(s) URL; delivery_mode: Invalid option: expected one of "push"|"poll"',
    });
    expect(
      parseRegister({ id: 'ws-1', url: 'http://agent.example/\u0000', agent_card: { extra: nested(33) } }),
    ).toEqual({
      ok: false,
      reason:
        'agent_card: Too deep: expected objects and arrays nested at most 32 levels; ' +
        'url: must not contain control or format characters, line separators or lone surrogates',
    });
    for (const [payload, schema] of [
      [{ id: 'ws-1', url: 'http://agent.example/\u0000', agent_card: {} }, registerPayloadSchema],
      [{ id: 'ws-1', agent_card: { skills: [nested(20_000)] } }, registerPayloadSchema],
      [{ workspace_id: 'ws-1', agent_card: { url: 'http://a\u2028b' } }, heartbeatPayloadSchema],
    ] as const)
      expect(schema.safeParse(payload).success).toBe(false);
    // Free text from a runtime is taken as sent, whatever it holds.
    const text = 'x\u0000\u001b[31m\u2028\ud800<img src=x onerror=alert(1)>';
    const beat = { workspace_id: 'ws-1', sample_error: text, current_task: text, agent_card: { name: text } };
    expect(parseHeartbeat(beat)).toMatchObject({ ok: true, value: beat });
    expect(heartbeatPayloadSchema.parse(beat)).toMatchObject(beat);
    expect(parseHeartbeat('beat')).toEqual({
      ok: false,
      reason: '(body): Invalid input: expected object, received string',
    });
  });
});
