/**
 * The operator files in ops/ as Prometheus and Grafana read them: the metrics their expressions
 * name, the problems `promtool check rules` would refuse the rules file for, and a scrape's
 * samples. PromQL is parsed with Prometheus's own grammar (@prometheus-io/lezer-promql).
 */
import { parser } from '@prometheus-io/lezer-promql';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';

type SyntaxNode = ReturnType<typeof parser.parse>['topNode'];

export const RULES_FILE = fileURLToPath(new URL('../../ops/prometheus/rules.yml', import.meta.url));
export const DASHBOARD_FILE = fileURLToPath(new URL('../../ops/grafana/dashboard.json', import.meta.url));

/** Functions whose arguments include a range vector (`x[5m]`); anywhere else one is a type error. */
const RANGE_FUNCTIONS = new Set([
  'rate',
  'irate',
  'increase',
  'delta',
  'idelta',
  'deriv',
  'predict_linear',
  'resets',
  'changes',
  'absent_over_time',
  'present_over_time',
  'avg_over_time',
  'min_over_time',
  'max_over_time',
  'sum_over_time',
  'count_over_time',
  'quantile_over_time',
  'stddev_over_time',
  'stdvar_over_time',
  'last_over_time',
  'holt_winters',
  'double_exponential_smoothing',
]);

/** Where the expression does not parse as PromQL, or uses a range vector outside a function taking one. */
export function promqlProblems(expr: string): string[] {
  if (expr.trim() === '') return ['empty expression'];
  const problems: string[] = [];
  parser.parse(expr).iterate({
    enter: (node) => {
      if (node.type.isError)
        problems.push(`syntax error at ${node.from}: ${JSON.stringify(expr.slice(node.from, node.from + 20))}`);
      if (node.name === 'MatrixSelector' && !insideRangeFunction(node.node, expr))
        problems.push(`range vector ${expr.slice(node.from, node.to)} outside a function that takes one`);
    },
  });
  return problems;
}

function insideRangeFunction(node: SyntaxNode, expr: string): boolean {
  const call = node.parent?.name === 'FunctionCallBody' ? node.parent.parent : null;
  if (call?.name !== 'FunctionCall') return false;
  const name = call.getChild('FunctionIdentifier');
  return name !== null && RANGE_FUNCTIONS.has(expr.slice(name.from, name.to));
}

/** The metric names an expression selects. */
export function metricNames(expr: string): string[] {
  const names = new Set<string>();
  parser.parse(expr).iterate({
    enter: (node) => {
      if (node.name !== 'VectorSelector') return;
      const identifier = node.node.getChild('Identifier');
      if (identifier !== null) names.add(expr.slice(identifier.from, identifier.to));
    },
  });
  return [...names];
}

// rulefmt's fields: promtool refuses any other (it reads the file strictly).
const FILE_FIELDS = new Set(['groups']);
const GROUP_FIELDS = new Set(['name', 'interval', 'query_offset', 'limit', 'labels', 'rules']);
const RULE_FIELDS = new Set(['record', 'alert', 'expr', 'for', 'keep_firing_for', 'labels', 'annotations']);
const DURATION = /^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$/;
const LABEL_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const METRIC_NAME = /^[A-Za-z_:][A-Za-z0-9_:]*$/;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function unknownFields(where: string, value: Record<string, unknown>, known: Set<string>): string[] {
  return Object.keys(value)
    .filter((key) => !known.has(key))
    .map((key) => `${where}: field ${key} not known`);
}

function durationProblems(where: string, value: unknown): string[] {
  if (value === undefined) return [];
  return typeof value === 'string' && value !== '' && DURATION.test(value)
    ? []
    : [`${where}: ${JSON.stringify(value)} is not a duration`];
}

/** A Go template's actions must open and close (`{{ ... }}`), each with something in it. */
function templateProblems(where: string, text: string): string[] {
  const problems: string[] = [];
  let rest = text;
  for (;;) {
    const open = rest.indexOf('{{');
    const close = rest.indexOf('}}');
    if (open === -1) {
      if (close !== -1) problems.push(`${where}: unexpected "}}"`);
      return problems;
    }
    if (close === -1 || close < open) return [...problems, `${where}: unclosed action "{{"`];
    if (rest.slice(open + 2, close).trim() === '') problems.push(`${where}: empty action "{{}}"`);
    rest = rest.slice(close + 2);
  }
}

function labelsProblems(where: string, value: unknown, templated: boolean): string[] {
  if (value === undefined) return [];
  if (!isRecord(value)) return [`${where}: not a map`];
  return Object.entries(value).flatMap(([name, text]) => [
    ...(LABEL_NAME.test(name) ? [] : [`${where}: ${JSON.stringify(name)} is not a valid label name`]),
    ...(typeof text === 'string' ? [] : [`${where}.${name}: not a string`]),
    ...(templated && typeof text === 'string' ? templateProblems(`${where}.${name}`, text) : []),
  ]);
}

function ruleProblems(where: string, rule: unknown): string[] {
  if (!isRecord(rule)) return [`${where}: not a map`];
  const problems = unknownFields(where, rule, RULE_FIELDS);
  const { alert, record, expr } = rule;
  if ((alert === undefined) === (record === undefined)) problems.push(`${where}: one of alert and record must be set`);
  if (record !== undefined) {
    if (typeof record !== 'string' || !METRIC_NAME.test(record))
      problems.push(`${where}: ${JSON.stringify(record)} is not a valid metric name`);
    for (const field of ['for', 'keep_firing_for', 'annotations'])
      if (rule[field] !== undefined) problems.push(`${where}: a recording rule has no ${field}`);
  }
  if (alert !== undefined && (typeof alert !== 'string' || alert === ''))
    problems.push(`${where}: the alert name must be a non-empty string`);
  if (typeof expr !== 'string') problems.push(`${where}: expr must be a string`);
  else problems.push(...promqlProblems(expr).map((problem) => `${where}: expr: ${problem}`));
  problems.push(...durationProblems(`${where}.for`, rule['for']));
  problems.push(...durationProblems(`${where}.keep_firing_for`, rule['keep_firing_for']));
  problems.push(...labelsProblems(`${where}.labels`, rule['labels'], alert !== undefined));
  problems.push(...labelsProblems(`${where}.annotations`, rule['annotations'], true));
  return problems;
}

/**
 * What `promtool check rules` would refuse in a rules file: YAML it cannot read, fields rulefmt
 * does not know, a group without a name or named twice, a rule that is neither (or both) an alert
 * and a recording rule, an expression that does not parse or puts a range vector where none is
 * allowed, a duration, label name or template it cannot read. Empty: none found.
 */
export function rulesProblems(text: string): string[] {
  let file: unknown;
  try {
    file = parseYaml(text, { uniqueKeys: true, strict: true });
  } catch (err) {
    return [`not YAML: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`];
  }
  if (!isRecord(file)) return ['the file is not a map with groups'];
  const problems = unknownFields('file', file, FILE_FIELDS);
  if (!Array.isArray(file['groups'])) return [...problems, 'groups: not a list'];
  const names = new Set<string>();
  file['groups'].forEach((group: unknown, g) => {
    const where = `groups[${g}]`;
    if (!isRecord(group)) return problems.push(`${where}: not a map`);
    problems.push(...unknownFields(where, group, GROUP_FIELDS));
    const name = group['name'];
    if (typeof name !== 'string' || name === '') problems.push(`${where}: a group needs a name`);
    else if (names.has(name)) problems.push(`${where}: group name ${name} repeated`);
    else names.add(name);
    problems.push(...durationProblems(`${where}.interval`, group['interval']));
    problems.push(...labelsProblems(`${where}.labels`, group['labels'], false));
    if (!Array.isArray(group['rules'])) return problems.push(`${where}.rules: not a list`);
    group['rules'].forEach((rule: unknown, r) => problems.push(...ruleProblems(`${where}.rules[${r}]`, rule)));
    return undefined;
  });
  return problems;
}

/** Every alert's and recording rule's expression in the rules file, by rule name. */
export function ruleExpressions(text: string): { name: string; expr: string }[] {
  const file = parseYaml(text) as { groups: { rules: { alert?: string; record?: string; expr: string }[] }[] };
  return file.groups.flatMap((group) =>
    group.rules.map((rule) => ({ name: rule.alert ?? rule.record ?? '', expr: rule.expr })),
  );
}

interface DashboardPanel {
  title?: string;
  type?: string;
  targets?: { expr?: string }[];
  panels?: DashboardPanel[];
}

/** Every query of the dashboard's panels, with its panel's title (Grafana's `$__rate_interval` as 5m). */
export function dashboardExpressions(text: string): { name: string; expr: string }[] {
  const dashboard = JSON.parse(text) as { panels?: DashboardPanel[] };
  const all = (panels: DashboardPanel[]): DashboardPanel[] => panels.flatMap((p) => [p, ...all(p.panels ?? [])]);
  return all(dashboard.panels ?? []).flatMap((panel) =>
    (panel.targets ?? []).map((target) => ({
      name: panel.title ?? '',
      expr: (target.expr ?? '').replaceAll('$__rate_interval', '5m'),
    })),
  );
}

/** The rules file's and the dashboard's expressions, as the repository has them. */
export function opsExpressions(): { name: string; expr: string }[] {
  return [
    ...ruleExpressions(readFileSync(RULES_FILE, 'utf8')),
    ...dashboardExpressions(readFileSync(DASHBOARD_FILE, 'utf8')),
  ];
}

/** One sample of a scrape in Prometheus's text format. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A scrape's samples (`name{labels} value [timestamp]`), comments and blank lines left out. */
export function parseScrape(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (match === null) continue;
    const [, name = '', labelText = '', value = ''] = match;
    const labels: Record<string, string> = {};
    for (const [, key = '', raw = ''] of labelText.matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[key] = raw.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    samples.push({ name, labels, value: Number(value) });
  }
  return samples;
}

/**
 * A scrape's samples by metric name as exposed (a histogram's `_bucket`, `_sum`, `_count`
 * apart): the values of its series.
 */
export function scrapedSamples(text: string): Map<string, number[]> {
  const samples = new Map<string, number[]>();
  for (const { name, value } of parseScrape(text)) samples.set(name, [...(samples.get(name) ?? []), value]);
  return samples;
}

/** The sum of a metric's series whose labels include `labels`. */
export function total(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([key, value]) => s.labels[key] === value))
    .reduce((sum, s) => sum + s.value, 0);
}
