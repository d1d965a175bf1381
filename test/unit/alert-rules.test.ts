/**
 * The alert rules (ops/prometheus/rules.yml) load in Prometheus and alert on what issue 31 asks
 * for, and the dashboard's queries (ops/grafana/dashboard.json) parse. `promtool check rules`
 * runs when the toolchain has it (scripts/toolchain.sh); without it, the check of
 * test/helpers/prometheus.ts stands in, and hostile rule files show it refuses what promtool
 * refuses (each is also given to promtool when it is there, so the two cannot drift apart).
 * That every metric they name is exported: test/e2e/stack.test.ts.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { describe, expect, it } from 'vitest';
import { promtoolPath } from '../../scripts/toolchain.js';
import {
  DASHBOARD_FILE,
  RULES_FILE,
  dashboardExpressions,
  metricNames,
  promqlProblems,
  rulesProblems,
} from '../helpers/prometheus.js';
import { fileScratchDir } from '../helpers/scratch.js';

const rulesText = readFileSync(RULES_FILE, 'utf8');
const promtool = promtoolPath();
const scratch = fileScratchDir('rules');

/** promtool's verdict on a rules file: null when it loads, else what promtool printed. */
function promtoolRefusal(text: string): string | null {
  if (promtool === undefined) throw new Error('no promtool');
  const file = join(scratch, `rules-${Math.random().toString(36).slice(2)}.yml`);
  writeFileSync(file, text);
  try {
    execFileSync(promtool, ['check', 'rules', file], { encoding: 'utf8', stdio: 'pipe' });
    return null;
  } catch (err) {
    const { stdout, stderr } = err as { stdout?: string; stderr?: string };
    return `${stdout ?? ''}${stderr ?? ''}`;
  }
}

interface Alert {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const alerts = (parseYaml(rulesText) as { groups: { rules: Alert[] }[] }).groups.flatMap((g) => g.rules);

describe('ops/prometheus/rules.yml', () => {
  it('has nothing promtool would refuse', () => {
    expect(rulesProblems(rulesText)).toEqual([]);
  });

  it('alerts on what an on-call engineer is paged for, each with a severity, a summary and what to look at', () => {
    const byName = new Map(alerts.map((rule) => [rule.alert, rule]));
    // Issue 31's list: many workspaces offline at once, crash loops, restart rate, reconcile
    // failures, schedule-to-start latency, the 429 rate, a worker with no pollers.
    const asked: [string, string][] = [
      ['WorkspacesOfflineMany', 'workspaces'],
      ['WorkspacesCrashLooping', 'workspaces_crash_looping'],
      ['WorkspaceRestartsHigh', 'workspace_restarts_total'],
      ['ReconcileFailures', 'workspace_reconcile_failures_total'],
      ['WorkflowTaskScheduleToStartHigh', 'temporal_workflow_task_schedule_to_start_latency_seconds_bucket'],
      ['ApiRefusingCalls', 'http_requests_total'],
      ['WorkerNotPolling', 'temporal_num_pollers'],
    ];
    for (const [name, metric] of asked) {
      const rule = byName.get(name);
      expect(rule, name).toBeDefined();
      expect(metricNames(rule?.expr ?? ''), name).toContain(metric);
    }
    for (const rule of alerts) {
      expect(['page', 'warn'], rule.alert).toContain(rule.labels?.['severity']);
      expect(rule.annotations?.['summary'], rule.alert).toBeTruthy();
      expect(rule.annotations?.['description'], rule.alert).toBeTruthy();
    }
  });
});

const rule = (fields: string): string => `groups:\n  - name: g\n    rules:\n      - alert: A\n${fields}`;

/** Rule files promtool refuses: what is wrong, the file, what the rules check says. */
const hostile: [string, string, RegExp][] = [
  ['a PromQL syntax error', rule('        expr: rate(x[5m]\n'), /syntax error/],
  ['a range vector outside a range function', rule('        expr: sum(x[5m]) > 1\n'), /range vector x\[5m\]/],
  ['an empty expression', rule("        expr: ''\n"), /empty expression/],
  ['an unknown rule field', rule('        expr: up == 0\n        severity: page\n'), /field severity not known/],
  ['an unknown group field', 'groups:\n  - name: g\n    rule: []\n', /field rule not known/],
  ['a group named twice', 'groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n', /repeated/],
  ['a group without a name', 'groups:\n  - rules: []\n', /needs a name/],
  ['a rule both alert and record', rule('        record: x:y\n        expr: up\n'), /one of alert and record/],
  ['a bad duration', rule('        expr: up == 0\n        for: 5 minutes\n'), /not a duration/],
  [
    'an unclosed template action',
    rule("        expr: up == 0\n        annotations:\n          summary: '{{ $value'\n"),
    /unclosed/,
  ],
  ['a key given twice', rule('        expr: up == 0\n        expr: up == 1\n'), /not YAML/],
  ['not YAML', 'groups: [\n', /not YAML/],
];

/**
 * Names outside Prometheus's classic character set (`[a-zA-Z_:][a-zA-Z0-9_:]*`): promtool 3
 * accepts them (UTF-8 names), Prometheus 2 refuses them and PromQL must quote them, so the rules
 * check refuses them too.
 */
const utf8Names: [string, string, RegExp][] = [
  [
    'a recording rule with a bad name',
    'groups:\n  - name: g\n    rules:\n      - record: a-b\n        expr: up\n',
    /valid metric name/,
  ],
  ['a bad label name', rule('        expr: up == 0\n        labels:\n          bad-name: x\n'), /valid label name/],
];

describe('the rules check', () => {
  it.each([...hostile, ...utf8Names])('refuses %s', (_, text, problem) => {
    expect(rulesProblems(text).join('\n')).toMatch(problem);
  });

  it('accepts a well-formed rule', () => {
    const text = rule(
      "        expr: sum by (le) (rate(x_bucket[5m])) > 1\n        for: 1h30m\n        labels:\n          severity: page\n        annotations:\n          summary: '{{ $value | humanize }} and {{ $labels.le }}'\n",
    );
    expect(rulesProblems(text)).toEqual([]);
  });
});

// Only where the toolchain has promtool (`bash scripts/toolchain.sh --promtool`): its build takes
// longer than the rest of the toolchain together, so the test command does not wait for it.
if (promtool !== undefined)
  describe('promtool check rules', () => {
    it('passes ops/prometheus/rules.yml', () => {
      expect(promtoolRefusal(rulesText)).toBeNull();
    });

    it.each(hostile)('refuses %s, as the rules check does', (_, text) => {
      expect(promtoolRefusal(text)).not.toBeNull();
    });

    it.each(utf8Names)('accepts %s, which the rules check refuses', (_, text) => {
      expect(promtoolRefusal(text)).toBeNull();
    });
  });

describe('ops/grafana/dashboard.json', () => {
  const queries = dashboardExpressions(readFileSync(DASHBOARD_FILE, 'utf8'));

  it('has queries that parse as PromQL', () => {
    expect(queries.length).toBeGreaterThan(10);
    for (const { name, expr } of queries) expect(promqlProblems(expr), `${name}: ${expr}`).toEqual([]);
  });

  it('shows every domain metric the service exports', () => {
    const shown = new Set(queries.flatMap(({ expr }) => metricNames(expr)));
    for (const metric of [
      'workspaces',
      'workspace_oldest_heartbeat_age_seconds',
      'workspace_status_transitions_total',
      'workspace_restarts_total',
      'workspace_dead_declarations_total',
      'workspace_dispatch_verdicts_total',
      'workspace_strikes_total',
      'workspace_plugin_deliveries_total',
      'workspace_plugin_removals_total',
      'workspace_drift_repairs_total',
      'workspace_reconcile_passes_total',
      'workspace_reconcile_failures_total',
      'api_boot_credential_refusals_total',
    ])
      expect(shown, metric).toContain(metric);
  });
});
