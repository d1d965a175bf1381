/** What operators see (search attributes, summary, details) and how we connect and register them. */
import MarkdownIt from 'markdown-it';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  devServerFleetArgs,
  devServerSearchAttributeArgs,
  devServerTaskQueuePartitions,
  ensureSearchAttributes,
  searchAttributeCommand,
  temporalSettingsFromEnv,
} from '../../connection.js';
import { defaultLifecycleConfig as config } from '../../workflows/config.js';
import {
  currentDetails,
  MARKDOWN_LITERAL_MAX,
  markdownLiteral,
  searchAttributeValues,
  workspaceStartMetadata,
  workspaceStatusKey,
} from '../../workflows/operator-view.js';
import { initialState, transition, type Event, type WorkspaceState } from '../../workflows/state-machine.js';
import { registerPayload } from '../helpers/payloads.js';
import { testScratchDir } from '../helpers/scratch.js';

const ID = 'ws-ops';
const T0 = Date.parse('2026-01-01T00:00:00Z');
const iso = (ms: number): string => new Date(ms).toISOString();

function run(events: Event[]): WorkspaceState {
  return events.reduce(
    (state, event, i) => transition(state, event, T0 + (i + 1) * 1_000, config).state,
    initialState(ID, 'provisioning', T0),
  );
}

const reconciled: Event[] = [
  { type: 'register', payload: registerPayload(ID) },
  {
    type: 'reconcileFinished',
    outcome: 'failed',
    error: 'beta: repository not found',
    report: {
      declared: 3,
      declaredNames: ['alpha', 'beta', 'gamma'],
      outcomes: [
        { name: 'alpha', status: 'installed', via: 'delivered', revision: 'a'.repeat(40) },
        { name: 'beta', status: 'failed', error: 'repository | not found' },
      ],
    },
  },
];

describe('operator view', () => {
  it('a fresh workspace: provisioning, nothing pending, no restarts', () => {
    const state = initialState(ID, 'provisioning', T0);
    expect(searchAttributeValues(state)).toEqual({
      status: 'provisioning',
      pluginsPending: 0,
      crashLooping: false,
      cordoned: false,
    });
    const details = currentDetails(state);
    expect(details).toContain('**Status: provisioning** since 2026-01-01T00:00:00.000Z');
    expect(details).toContain('**Plugins:** 0 declared, 0 pending');
    expect(details).toContain('**Restarts:** none');
    expect(details).not.toContain('| plugin |');
  });

  it('after a reconcile that delivered one plugin and failed another: pending count, plugin rows, restart reason', () => {
    const state = run(reconciled);
    // The delivery asked for a restart: provisioning again, one plugin still pending.
    expect(searchAttributeValues(state)).toEqual({
      status: 'provisioning',
      pluginsPending: 1,
      crashLooping: false,
      cordoned: false,
    });
    const details = currentDetails(state);
    expect(details).toContain('**Plugins:** 3 declared, 1 pending');
    expect(details).toContain('**Restarts:** 1, last: ` reconcile delivered 1 plugin(s) ` (by ` reconcile ` at ');
    expect(details).toContain('in flight');
    expect(details).toContain('Last reconcile failed: ` beta: repository not found `');
    expect(details).toContain(`| alpha | installed | delivered | \` ${'a'.repeat(12)} \` |  |`);
    // A pipe in an error must not break the table.
    expect(details).toContain('| beta | failed |  |  | ` repository \u00A6 not found ` |');
  });

  it('removals and drift repairs: planned while the pass runs (pending, search attribute), then what changed', () => {
    const running = run([
      ...reconciled.slice(0, 1),
      { type: 'reconcilePlanned', plan: { deliveries: 1, removals: 2, repairs: 1, refreshes: 0 } },
    ]);
    expect(searchAttributeValues(running)).toEqual({
      status: 'online',
      pluginsPending: 4,
      crashLooping: false,
      cordoned: false,
    });
    expect(currentDetails(running)).toContain(
      '**Plugins:** 0 declared, 4 pending (reconcile running: ` provisioning→online (register) `, verify: 1 to deliver, 2 to remove, 1 drifted)',
    );
    const done = run([
      ...reconciled.slice(0, 1),
      { type: 'reconcilePlanned', plan: { deliveries: 0, removals: 1, repairs: 1, refreshes: 0 } },
      {
        type: 'reconcileFinished',
        outcome: 'succeeded',
        report: {
          declared: 1,
          declaredNames: ['alpha'],
          outcomes: [
            { name: 'gone', status: 'removed' },
            { name: 'alpha', status: 'installed', via: 'delivered', revision: 'b'.repeat(40), change: 'repaired' },
          ],
        },
      },
    ]);
    expect(searchAttributeValues(done)).toEqual({
      status: 'provisioning',
      pluginsPending: 0,
      crashLooping: false,
      cordoned: false,
    });
    const details = currentDetails(done);
    expect(details).toContain(
      'Last reconcile changed the box: 0 delivered, 1 removed, 1 repaired after drift, 0 upgraded',
    );
    expect(details).toContain(`| alpha | installed | delivered (repaired) | \` ${'b'.repeat(12)} \` |  |`);
    expect(details).toContain('**Restarts:** 1, last: ` reconcile delivered 1 and removed 1 plugin(s) `');
  });

  it('a dead declaration shows the verdict and the restart it caused', () => {
    const state = run([
      { type: 'register', payload: registerPayload(ID) },
      { type: 'deadDeclared', reason: 'not running and no recent heartbeat', requester: 'dispatcher' },
      { type: 'verdict', verdict: 'dead', detail: 'restart triggered', requester: 'dispatcher' },
    ]);
    const details = currentDetails(state);
    expect(details).toContain(
      '**Restarts:** 1, last: ` dead: not running and no recent heartbeat ` (by ` dispatcher `',
    );
    expect(details).toContain('Last verdict: dead, ` restart triggered ` (for ` dispatcher `');
  });

  it('text from runtimes and boxes renders as itself: no link, image, HTML, heading or table row of its own', () => {
    const hostile = [
      '[x](javascript:alert(1))',
      '![](http://evil.example/pixel.png)',
      '<img src=x onerror=alert(1)>',
      '<script>alert(1)</script>',
      '`code` and ``more`` and a lone ` backtick',
      'restart failed:\n# Status: online\n\n| plugin | status |\n| --- | --- |\n| fake | installed |',
      '> quote\n- list\n```\nfence',
      'http://evil.example/ and www.evil.example',
      '**bold** _em_ ~~gone~~ &lt;entity&gt; &amp;',
      '\u0000NUL \u001b[31mred\u001b[0m \u2028sep \u202eevil \ud800lone',
      'trailing backslash \\',
    ];
    const md = new MarkdownIt({ html: true, linkify: true });
    // A URL the payload rules accept (no control characters), markdown all the same.
    const url = 'http://agent.example/[x](javascript:alert(1))/<img src=x onerror=alert(1)>/`tick`/![](http://evil/)';
    const state = run([
      { type: 'register', payload: registerPayload(ID, { url }) },
      { type: 'restartRequested', reason: hostile[1] ?? '', requester: hostile[3] ?? '' },
      { type: 'restartFinished', outcome: 'failed', error: hostile[5] ?? '' },
      {
        type: 'reconcileFinished',
        outcome: 'failed',
        error: hostile[0] ?? '',
        report: {
          declared: 1,
          declaredNames: hostile.map((_, i) => `p${i}`),
          outcomes: hostile.map((error, i) => ({ name: `p${i}`, status: 'failed' as const, error })),
        },
      },
    ]);
    expect(state.plugins['p0']?.error).toBe(hostile[0]);
    const html = md.render(currentDetails(state));
    // Only the view's own markup: paragraphs, bold, code spans and the plugin table.
    const tags = new Set([...html.matchAll(/<([a-z0-9]+)/g)].map((m) => m[1]));
    expect([...tags].sort()).toEqual(['code', 'p', 'strong', 'table', 'tbody', 'td', 'th', 'thead', 'tr']);
    // The URL, while the workspace is online at it.
    const online = md.render(currentDetails(run([{ type: 'register', payload: registerPayload(ID, { url }) }])));
    expect(online).toContain(
      ' at <code>http://agent.example/[x](javascript:alert(1))/&lt;img src=x onerror=alert(1)&gt;/`tick`/![](http://evil/)</code>',
    );
    expect(online).not.toMatch(/<(a|img)\b/);
    // One row per plugin, five cells each: nothing split a row or made one.
    const rows = [...html.matchAll(/<tr>([\s\S]*?)<\/tr>/g)].map((m) => (m[1] ?? '').match(/<t[dh]/g)?.length);
    expect(rows).toEqual(new Array(hostile.length + 1).fill(5));

    for (const text of hostile) {
      const rendered = md.renderInline(markdownLiteral(text));
      // One code span holding the text itself (one line, unsafe characters shown as U+FFFD).
      expect(rendered).toMatch(/^<code>[^<]*<\/code>$/);
      const shown = rendered
        .slice('<code>'.length, -'</code>'.length)
        .replaceAll('&lt;', '<')
        .replaceAll('&gt;', '>')
        .replaceAll('&quot;', '"')
        .replaceAll('&amp;', '&');
      const expected = text
        .replace(/\r\n|[\t\n\r\u0085\u2028\u2029]/g, ' ')
        .replace(/[\p{Cc}\p{Cf}\p{Cs}]/gu, '\uFFFD');
      expect(shown).toBe(expected);
    }
  });

  it('a long value is cut; an empty one shows nothing', () => {
    const long = 'x'.repeat(MARKDOWN_LITERAL_MAX + 50);
    expect(markdownLiteral(long)).toBe(`\` ${'x'.repeat(MARKDOWN_LITERAL_MAX)}… \``);
    expect(markdownLiteral('')).toBe('');
    expect(markdownLiteral('a|b', 'cell')).toBe('` a\u00A6b `');
    expect(markdownLiteral('a``b')).toBe('``` a``b ```');
  });

  it('start metadata: summary, details naming the plugins, first search attribute values', () => {
    const created = workspaceStartMetadata(ID, 'awaiting_agent', ['alpha', 'beta']);
    expect(created.staticSummary).toBe('Workspace ws-ops');
    expect(created.staticDetails).toContain('Plugins declared at creation: `alpha`, `beta`.');
    expect(created.typedSearchAttributes).toContainEqual({ key: workspaceStatusKey, value: 'awaiting_agent' });
    // A runtime's first call does not know the declared plugins: no claim about them.
    expect(workspaceStartMetadata(ID, 'provisioning').staticDetails).not.toContain('Plugins declared');
  });
});

describe('search attribute registration', () => {
  function fakeOperator(registered: string[], addError?: Error & { code?: number }) {
    const added: Record<string, number>[] = [];
    return {
      added,
      listSearchAttributes: () =>
        Promise.resolve({ customAttributes: Object.fromEntries(registered.map((name) => [name, 2])) }),
      addSearchAttributes: (request: { namespace: string; searchAttributes: Record<string, number> }) => {
        if (addError) return Promise.reject(addError);
        added.push(request.searchAttributes);
        return Promise.resolve({});
      },
    };
  }

  it('registers only the missing ones, with their types', async () => {
    const operator = fakeOperator(['WorkspaceStatus']);
    await expect(ensureSearchAttributes(operator, 'default')).resolves.toEqual([
      'PluginsPending',
      'CrashLooping',
      'Cordoned',
    ]);
    // INDEXED_VALUE_TYPE_INT, INDEXED_VALUE_TYPE_BOOL
    expect(operator.added).toEqual([{ PluginsPending: 3, CrashLooping: 5, Cordoned: 5 }]);
  });

  it('does nothing when all are registered', async () => {
    const operator = fakeOperator(['WorkspaceStatus', 'PluginsPending', 'CrashLooping', 'Cordoned']);
    await expect(ensureSearchAttributes(operator, 'default')).resolves.toEqual([]);
    expect(operator.added).toEqual([]);
  });

  it('a refusal names the CLI command that fixes it', async () => {
    const operator = fakeOperator([], Object.assign(new Error('permission denied'), { code: 7 }));
    await expect(ensureSearchAttributes(operator, 'prod')).rejects.toThrow(
      'Register them once: temporal operator search-attribute create --namespace prod --name WorkspaceStatus --type Keyword --name PluginsPending --type Int --name CrashLooping --type Bool --name Cordoned --type Bool',
    );
  });

  it('another worker registering them first is not an error', async () => {
    const operator = fakeOperator([], Object.assign(new Error('already exists'), { code: 6 }));
    await expect(ensureSearchAttributes(operator, 'default')).resolves.toEqual([]);
  });

  it('the dev server gets them as --search-attribute flags', () => {
    expect(devServerSearchAttributeArgs()).toEqual([
      '--search-attribute',
      'WorkspaceStatus=Keyword',
      '--search-attribute',
      'PluginsPending=Int',
      '--search-attribute',
      'CrashLooping=Bool',
      '--search-attribute',
      'Cordoned=Bool',
    ]);
    expect(searchAttributeCommand('default')).toContain('--namespace default');
  });
});

describe('connection settings (the SDK environment configuration)', () => {
  const noFile = { TEMPORAL_CONFIG_FILE: join(tmpdir(), 'no-such-temporal.toml') };

  it('nothing configured: no address (npm start runs a dev server), namespace default', () => {
    const settings = temporalSettingsFromEnv({ ...noFile });
    expect(settings.address).toBeUndefined();
    expect(settings.namespace).toBe('default');
  });

  it('address, namespace, API key and TLS from the environment', () => {
    const settings = temporalSettingsFromEnv({
      ...noFile,
      TEMPORAL_ADDRESS: 'my-ns.a1b2c.tmprl.cloud:7233',
      TEMPORAL_NAMESPACE: 'my-ns.a1b2c',
      TEMPORAL_API_KEY: 'secret-key',
    });
    expect(settings.address).toBe('my-ns.a1b2c.tmprl.cloud:7233');
    expect(settings.namespace).toBe('my-ns.a1b2c');
    expect(settings.connectionOptions.apiKey).toBe('secret-key');
    // An API key implies TLS, as in the SDK and the CLI.
    expect(settings.connectionOptions.tls).toBeTruthy();
  });

  it('a profile from a temporal.toml file, selected by TEMPORAL_PROFILE', () => {
    const dir = testScratchDir('envconfig');
    const file = join(dir, 'temporal.toml');
    writeFileSync(
      file,
      ['[profile.staging]', 'address = "temporal.staging.internal:7233"', 'namespace = "workspaces"', ''].join('\n'),
    );
    const settings = temporalSettingsFromEnv({ TEMPORAL_CONFIG_FILE: file, TEMPORAL_PROFILE: 'staging' });
    expect(settings.address).toBe('temporal.staging.internal:7233');
    expect(settings.namespace).toBe('workspaces');
  });
});

describe('the dev server task queue partitions', () => {
  const partitionFlags = (args: string[]): string[] => args.filter((arg) => arg.startsWith('matching.'));

  it('a new database gets one partition, written down beside it before the server first starts', () => {
    const db = join(testScratchDir('partitions'), 'temporal.db');
    expect(partitionFlags(devServerFleetArgs(db))).toEqual([
      'matching.numTaskqueueReadPartitions=1',
      'matching.numTaskqueueWritePartitions=1',
    ]);
    expect(readFileSync(`${db}.partitions`, 'utf8')).toBe('1\n');
    // The server made the database; the next start reads the count back, not the file's absence.
    writeFileSync(db, '');
    expect(devServerTaskQueuePartitions(db)).toBe(1);
  });

  it("a database made before keeps the CLI's four, so no backlog is left in a partition nobody reads", () => {
    const db = join(testScratchDir('partitions'), 'temporal.db');
    writeFileSync(db, '');
    expect(devServerTaskQueuePartitions(db)).toBe(4);
    expect(existsSync(`${db}.partitions`)).toBe(false);
  });

  it('a count written by hand is used, and a bad one is refused by name', () => {
    const db = join(testScratchDir('partitions'), 'temporal.db');
    writeFileSync(db, '');
    writeFileSync(`${db}.partitions`, '2\n');
    expect(devServerTaskQueuePartitions(db)).toBe(2);
    writeFileSync(`${db}.partitions`, 'four\n');
    expect(() => devServerTaskQueuePartitions(db)).toThrow(`${db}.partitions must hold a positive whole number`);
  });
});

describe('holds in the view', () => {
  it('a crash-looping, cordoned workspace: flags, next attempt, the held restart', () => {
    let state = transition(
      initialState(ID, 'provisioning', T0),
      { type: 'register', payload: registerPayload(ID) },
      T0,
      config,
    ).state;
    state = transition(state, { type: 'cordon', reason: 'incident `7`', requester: 'alice' }, T0 + 1, config).state;
    state = transition(state, { type: 'deadDeclared', reason: 'not running', requester: 'd' }, T0 + 2, config).state;
    state = {
      ...state,
      restart: { ...state.restart, crashes: 3, crashLooping: true, nextAttemptAt: iso(T0 + 20_002) },
    };
    expect(searchAttributeValues(state)).toEqual({
      status: 'offline',
      pluginsPending: 0,
      crashLooping: true,
      cordoned: true,
    });
    const details = currentDetails(state);
    expect(details).toContain(
      `**Cordoned** by \` alice \` since ${iso(T0 + 1)}: \`\` incident \`7\` \`\`; automatic restarts and deliveries held`,
    );
    expect(details).toContain(`**Crash-looping:** 3 crashes in a row; next attempt at ${iso(T0 + 20_002)}`);
    expect(details).toContain(`Restart held since ${iso(T0 + 2)}: \` dead: not running \` (by \` d \`)`);
  });
});
