/**
 * Self time of `node --cpu-prof` profiles, by function and by file or package, for the fleet
 * bench's profiles (`npm run bench:fleet -- --profile DIR`):
 *
 *   tsx bench/cpuprofile.ts DIR/n1000/worker [--window DIR/n1000/window.json] [--top 15]
 *
 * Each process writes one profile per thread (main thread and each worker thread). With
 * `--window`, only the samples taken while the load ran count: a profile's clock is tied to
 * the wall clock through its process's start time, which the bench recorded.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface Window {
  loadStartedAt: number;
  loadEndedAt: number;
  /** Start of each process, ms since the epoch, by pid. */
  starts: Record<string, number>;
}

const root = fileURLToPath(new URL('../', import.meta.url));

/** `CPU.20250101.120000.<pid>.<thread>.<seq>.cpuprofile` */
function fileIds(name: string): { pid: string; thread: string } | undefined {
  const match = /^CPU\.\d+\.\d+\.(\d+)\.(\d+)\.\d+\.cpuprofile$/.exec(name);
  return match ? { pid: match[1] ?? '', thread: match[2] ?? '' } : undefined;
}

/** Where a function lives: a package (node_modules), a file of ours, node's internals, or V8. */
function moduleOf(url: string): string {
  if (url === '') return '(v8 / native)';
  if (url.startsWith('node:')) return 'node: internals';
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path)?.[1];
  if (pkg !== undefined) return pkg;
  if (path.startsWith(root)) return relative(root, path);
  return path;
}

/** Self time by function, by file or package, by thread; inclusive time of the functions named in `inclusive`. */
export function aggregate(dir: string, window: Window | undefined, inclusive: string[] = []) {
  const files = readdirSync(dir).filter((name) => fileIds(name) !== undefined);
  const profiles = files.map((name) => ({
    name,
    ids: fileIds(name) ?? { pid: '', thread: '' },
    profile: JSON.parse(readFileSync(join(dir, name), 'utf8')) as Profile,
  }));
  const byFunction = new Map<string, number>();
  const byModule = new Map<string, number>();
  const byThread = new Map<string, number>();
  const byInclusive = new Map<string, number>();
  let total = 0;
  for (const { name, ids, profile } of profiles) {
    // The main thread's profile starts as its process does: it anchors the clock of every thread.
    const anchor = profiles.find((p) => p.ids.pid === ids.pid && p.ids.thread === '0')?.profile.startTime;
    const started = window?.starts[ids.pid];
    let from = -Infinity;
    let to = Infinity;
    if (window !== undefined && anchor !== undefined && started !== undefined) {
      from = anchor + (window.loadStartedAt - started) * 1000;
      to = anchor + (window.loadEndedAt - started) * 1000;
    }
    const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
    const parents = new Map<number, number>();
    for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id);
    // Per node: the named functions on its stack (each once), for the inclusive times.
    const named = new Map<number, string[]>();
    for (const node of profile.nodes) {
      const names = new Set<string>();
      for (let id: number | undefined = node.id; id !== undefined; id = parents.get(id)) {
        const name = nodes.get(id)?.callFrame.functionName ?? '';
        if (inclusive.includes(name)) names.add(name);
      }
      named.set(node.id, [...names]);
    }
    let at = profile.startTime;
    let threadTotal = 0;
    profile.samples.forEach((id, i) => {
      const delta = profile.timeDeltas[i] ?? 0;
      at += delta;
      if (at < from || at >= to) return;
      const frame = nodes.get(id)?.callFrame;
      if (frame === undefined || frame.functionName === '(idle)') return;
      for (const name of named.get(id) ?? [])
        byInclusive.set(
          `${name} (thread ${ids.thread})`,
          (byInclusive.get(`${name} (thread ${ids.thread})`) ?? 0) + delta,
        );
      const where = moduleOf(frame.url);
      const fn = `${frame.functionName || '(anonymous)'} ${where}${frame.url ? `:${frame.lineNumber + 1}` : ''}`;
      byFunction.set(fn, (byFunction.get(fn) ?? 0) + delta);
      byModule.set(where, (byModule.get(where) ?? 0) + delta);
      threadTotal += delta;
    });
    byThread.set(`pid ${ids.pid} thread ${ids.thread} (${name})`, threadTotal);
    total += threadTotal;
  }
  return { total, byFunction, byModule, byThread, byInclusive };
}

function top(map: Map<string, number>, total: number, n: number): string {
  return [...map]
    .sort(([, a], [, b]) => b - a)
    .slice(0, n)
    .map(
      ([key, us]) =>
        `${((us / total) * 100).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(7)} ms  ${key}`,
    )
    .join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      window: { type: 'string' },
      top: { type: 'string', default: '15' },
      inclusive: { type: 'string', default: '' },
    },
  });
  const window = values.window === undefined ? undefined : (JSON.parse(readFileSync(values.window, 'utf8')) as Window);
  const n = Number(values.top);
  for (const dir of positionals) {
    const inclusive = values.inclusive.split(',').filter((name) => name !== '');
    const { total, byFunction, byModule, byThread, byInclusive } = aggregate(dir, window, inclusive);
    console.log(`== ${dir}: ${(total / 1000).toFixed(0)} ms busy (not idle)${window ? ' during the load' : ''}`);
    console.log(`-- busy by thread (% of busy)\n${top(byThread, total, 20)}`);
    console.log(`-- self time by file / package (% of busy)\n${top(byModule, total, n)}`);
    console.log(`-- self time by function (% of busy)\n${top(byFunction, total, n)}`);
    if (inclusive.length > 0) console.log(`-- inclusive time (% of busy)\n${top(byInclusive, total, 40)}`);
    console.log('');
  }
}
