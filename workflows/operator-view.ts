/**
 * What an operator sees of a workspace in the Temporal Web UI and CLI, derived from its state
 * and nothing else: search attributes to filter the workflow list, the static summary and
 * details a starter sets, and the current details shown on the workflow's page. Pure, so it
 * is unit-tested without Temporal.
 */
import { defineSearchAttributeKey, type SearchAttributePair } from '@temporalio/common';
import type { InitialStatus, WorkspaceState } from './state-machine.js';

/** `WorkspaceStatus = "offline"` in the UI's list filter or `temporal workflow list --query`. */
export const workspaceStatusKey = defineSearchAttributeKey('WorkspaceStatus', 'KEYWORD');
/**
 * `PluginsPending > 0`: plugins a reconcile still owes the box: while a pass runs, what it will
 * deliver, remove and repair; after it, what failed.
 */
export const pluginsPendingKey = defineSearchAttributeKey('PluginsPending', 'INT');
/** `CrashLooping = true`: the runtime crashed twice or more in a row; automatic restarts back off. */
export const crashLoopingKey = defineSearchAttributeKey('CrashLooping', 'BOOL');
/** `Cordoned = true`: an operator holds the workspace; nothing automatic restarts or delivers. */
export const cordonedKey = defineSearchAttributeKey('Cordoned', 'BOOL');
/** Every search attribute the workflow sets, with the type a cluster must register it with. */
export const searchAttributeKeys = [workspaceStatusKey, pluginsPendingKey, crashLoopingKey, cordonedKey] as const;

export interface SearchAttributeValues {
  status: string;
  pluginsPending: number;
  crashLooping: boolean;
  cordoned: boolean;
}

export function searchAttributeValues(state: WorkspaceState): SearchAttributeValues {
  return {
    status: state.status,
    pluginsPending: state.pluginsPending,
    crashLooping: state.restart.crashLooping,
    cordoned: state.cordon !== null,
  };
}

/** The pairs to upsert for `values`. */
export function searchAttributePairs(values: SearchAttributeValues): SearchAttributePair[] {
  return [
    { key: workspaceStatusKey, value: values.status },
    { key: pluginsPendingKey, value: values.pluginsPending },
    { key: crashLoopingKey, value: values.crashLooping },
    { key: cordonedKey, value: values.cordoned },
  ];
}

/**
 * What whoever starts a workspace workflow sets: the one-line summary and the details the UI
 * shows (static: fixed for the run), and the search attributes' first values, so the list is
 * right before the workflow's first task. `declaredPlugins` is unknown to a runtime's first call.
 */
export function workspaceStartMetadata(
  workspaceId: string,
  initialStatus: InitialStatus,
  declaredPlugins?: readonly string[],
): { staticSummary: string; staticDetails: string; typedSearchAttributes: SearchAttributePair[] } {
  const details = [
    `Lifecycle of workspace \`${workspaceId}\`: registration, heartbeats, declared-plugin reconcile, restarts and dead detection.`,
  ];
  if (declaredPlugins !== undefined) {
    const names = declaredPlugins.length === 0 ? 'none' : declaredPlugins.map((name) => `\`${name}\``).join(', ');
    details.push(`Plugins declared at creation: ${names}.`);
  }
  details.push('Live status, plugins and the last restart: Current Details. Everything: the `state` query.');
  return {
    staticSummary: `Workspace ${workspaceId}`,
    staticDetails: details.join('\n\n'),
    typedSearchAttributes: searchAttributePairs({
      status: initialStatus,
      pluginsPending: 0,
      crashLooping: false,
      cordoned: false,
    }),
  };
}

/**
 * The page's current details, markdown, rewritten whenever the state changes; the headline facts
 * first. Every value the workflow did not make itself (a runtime's URL, a box's output quoted in
 * an error, a plugin's revision, an operator's reason, a caller's name) goes through
 * markdownLiteral: the Temporal Web UI renders this markdown.
 */
export function currentDetails(state: WorkspaceState): string {
  const { restart, reconcile } = state;
  const lines = [
    `**Status: ${state.status}** since ${state.statusSince}${state.url === null ? '' : ` at ${markdownLiteral(state.url)}`}`,
    `**Plugins:** ${state.pluginsDeclaredCount} declared, ${state.pluginsPending} pending` +
      (reconcile.running
        ? ` (reconcile running: ${markdownLiteral(reconcile.lastTrigger ?? '')}${passWork(state)})`
        : ''),
  ];
  if (state.runtime === 'external')
    lines.push('**Runtime: external**: never probed, restarted or delivered to by the service');
  if (state.cordon !== null)
    lines.push(
      `**Cordoned** by ${markdownLiteral(state.cordon.requester)} since ${state.cordon.since}: ` +
        `${markdownLiteral(state.cordon.reason)}; automatic restarts and deliveries held`,
    );
  if (restart.crashLooping)
    lines.push(
      `**Crash-looping:** ${restart.crashes} crashes in a row; ` +
        (restart.nextAttemptAt === null ? 'restarting' : `next attempt at ${restart.nextAttemptAt}`),
    );
  if (restart.held !== null)
    lines.push(
      `Restart held since ${restart.held.since}: ${markdownLiteral(restart.held.reason)} ` +
        `(by ${markdownLiteral(restart.held.requester)})`,
    );
  if (restart.lastReason === null) lines.push('**Restarts:** none');
  else {
    const phase = restart.inFlight
      ? 'in flight'
      : restart.lastError === null
        ? 'done'
        : `failed: ${markdownLiteral(restart.lastError)}`;
    lines.push(
      `**Restarts:** ${restart.count}, last: ${markdownLiteral(restart.lastReason)} ` +
        `(by ${markdownLiteral(restart.lastRequester ?? 'unknown')} at ${restart.lastStartedAt ?? ''}, ${phase})`,
    );
  }
  const verdict = state.deadDetection.lastVerdict;
  if (verdict !== null)
    lines.push(
      `Last verdict: ${verdict.verdict}, ${markdownLiteral(verdict.detail)} ` +
        `(for ${markdownLiteral(verdict.requester)} at ${verdict.at})`,
    );
  const beat = state.lastHeartbeat;
  if (beat !== null)
    lines.push(`Last heartbeat: ${beat.at} (error rate ${beat.errorRate}, active tasks ${beat.activeTasks})`);
  if (reconcile.lastOutcome === 'failed')
    lines.push(`Last reconcile failed: ${markdownLiteral(reconcile.lastError ?? 'unknown error')}`);
  const changes = reconcile.lastChanges;
  if (changes !== null && Object.values(changes).some((n) => n > 0))
    lines.push(
      `Last reconcile changed the box: ${changes.delivered} delivered, ${changes.removed} removed, ` +
        `${changes.repaired} repaired after drift, ${changes.upgraded} upgraded`,
    );

  // Markdown paragraphs, then one table row per plugin a reconcile worked on. Names are safe
  // path segments (the API and the reconcile refuse others); statuses and ways are the workflow's.
  const plugins = Object.entries(state.plugins).sort(([a], [b]) => a.localeCompare(b));
  const table = plugins.map(([name, plugin]) => {
    const revision = plugin.revision === null ? '' : markdownLiteral(plugin.revision.slice(0, 12), 'cell');
    const via = (plugin.via ?? '') + (plugin.change ? ` (${plugin.change})` : '');
    return `| ${name} | ${plugin.status} | ${via} | ${revision} | ${markdownLiteral(plugin.error ?? '', 'cell')} |`;
  });
  if (table.length > 0)
    lines.push(
      ['| plugin | status | via | revision | error |', '| --- | --- | --- | --- | --- |', ...table].join('\n'),
    );
  return lines.join('\n\n');
}

/** What the running pass set out to do, once it has diffed (and listed the box). */
function passWork(state: WorkspaceState): string {
  const { plan, mode } = state.reconcile;
  if (plan === null) return mode === 'diff' ? '' : `, ${mode}`;
  const work = [
    [plan.deliveries, 'to deliver'],
    [plan.removals, 'to remove'],
    [plan.repairs, 'drifted'],
    [plan.refreshes, 'to refresh'],
  ] as const;
  const parts = work.filter(([count]) => count > 0).map(([count, what]) => `${count} ${what}`);
  return `, ${mode}: ${parts.length === 0 ? 'nothing to change' : parts.join(', ')}`;
}

/** The most characters of one value the view shows; past it the value is cut, with an ellipsis. */
export const MARKDOWN_LITERAL_MAX = 500;

/**
 * Text from outside the workflow as inert markdown, whatever it holds: a code span, so no link,
 * image, autolink, HTML, emphasis or entity is made of it; fenced with one backtick more than its
 * longest run of backticks, so it cannot close the span early; on one line (line breaks and tabs
 * become spaces), so it cannot start a heading, list, quote, fence or table row; control, format
 * and separator characters and lone surrogates shown as U+FFFD; cut at MARKDOWN_LITERAL_MAX
 * UTF-16 units. In a table `cell`, a `|` becomes U+00A6 (broken bar): GFM splits a row at every
 * unescaped pipe before it reads code spans, and a backslash before it could itself be escaped.
 * '' stays '' (nothing to show).
 */
export function markdownLiteral(text: string, where: 'text' | 'cell' = 'text'): string {
  let line = text
    .replace(/\r\n|[\t\n\r\u0085\u2028\u2029]/g, ' ')
    .replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/gu, '\uFFFD');
  // Cut between UTF-16 units, never inside a surrogate pair (lone surrogates are replaced above).
  if (line.length > MARKDOWN_LITERAL_MAX)
    line = `${line.slice(0, MARKDOWN_LITERAL_MAX).replace(/[\ud800-\udbff]$/, '')}…`;
  if (where === 'cell') line = line.replaceAll('|', '\u00A6');
  if (line === '') return '';
  const longestRun = Math.max(0, ...(line.match(/`+/g) ?? []).map((run) => run.length));
  const fence = '`'.repeat(longestRun + 1);
  // CommonMark strips one space on each side of a span's content: the padding, never the text's own.
  return `${fence} ${line} ${fence}`;
}
