/**
 * What a process costs, read from /proc (Linux): CPU time, resident memory, and a sampler that
 * follows a set of processes (or process trees) over a run for peak memory and mean CPU.
 */
import { readFileSync, readdirSync } from 'node:fs';

/** Clock ticks per second of /proc's CPU times. */
export const CLOCK_TICKS = 100;

export interface ProcStat {
  ppid: number;
  /** CPU time (user + system, in clock ticks) the process itself has used. */
  ticks: number;
  /** CPU time its children used before they ended and it reaped them. */
  reapedTicks: number;
}

/** A process's parent and the CPU time it and its ended children have used; undefined once it is gone. */
export function procStat(pid: number): ProcStat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces: the fields after it start past its ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return {
      ppid: Number(fields[1]),
      ticks: Number(fields[11]) + Number(fields[12]),
      reapedTicks: Number(fields[13]) + Number(fields[14]),
    };
  } catch {
    return undefined;
  }
}

/** CPU time (user + system) a process has used so far, in ms; throws once it is gone. */
export function cpuMs(pid: number): number {
  const ticks = procStat(pid)?.ticks;
  if (ticks === undefined) throw new Error(`process ${pid} is gone`);
  return (ticks / CLOCK_TICKS) * 1000;
}

/** When a process started, ms since the epoch (to 10 ms), from /proc. */
export function processStartMs(pid: number): number {
  // Boot time from the uptime (10 ms), not /proc/stat's btime (whole seconds).
  const bootMs = Date.now() - Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1000;
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const startTicks = Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[19]);
  return bootMs + (startTicks / CLOCK_TICKS) * 1000;
}

/** The process and its descendants. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = procStat(Number(entry));
    if (stat === undefined) continue;
    const list = children.get(stat.ppid) ?? [];
    list.push(Number(entry));
    children.set(stat.ppid, list);
  }
  const pids = [root];
  for (let i = 0; i < pids.length; i++) pids.push(...(children.get(pids[i] ?? 0) ?? []));
  return pids;
}

/** Resident memory of a process in MB; 0 when it is gone. */
export function rssMb(pid: number | undefined): number {
  return pid === undefined ? 0 : memoryMb([pid]);
}

/** Memory in MB: VmRSS of one process; for a tree (PostgreSQL's), the sum of PSS, which counts shared memory once. */
export function memoryMb(pids: number[]): number {
  const field = pids.length === 1 ? 'VmRSS' : 'Pss';
  let kb = 0;
  for (const pid of pids) {
    try {
      const text = readFileSync(`/proc/${pid}/${pids.length === 1 ? 'status' : 'smaps_rollup'}`, 'utf8');
      kb += Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return kb / 1024;
}

/** A named process, or a tree of them summed (`pids`), to measure. */
export interface Target {
  name: string;
  pids: number[];
}

/** Peak memory and mean CPU of one target over a run. */
export interface Usage {
  name: string;
  peakMb: number;
  /** Percent of one core. */
  meanCpu: number;
}

/** Samples each target once a second (the targets are asked each time: processes come and go): peak memory, mean CPU. */
export class Sampler {
  private readonly last = new Map<string, { ticks: Map<number, number>; at: number }>();
  private readonly figures = new Map<string, { peakMb: number; cpuSum: number; samples: number }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly targets: () => Target[]) {}

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), 1_000);
  }

  stop(): Usage[] {
    clearInterval(this.timer);
    this.sample();
    return [...this.figures].map(([name, f]) => ({
      name,
      peakMb: f.peakMb,
      meanCpu: f.samples > 0 ? f.cpuSum / f.samples : NaN,
    }));
  }

  private sample(): void {
    const at = performance.now();
    for (const { name, pids } of this.targets()) {
      const ticks = new Map<number, number>();
      for (const pid of pids) {
        const stat = procStat(pid);
        if (stat !== undefined) ticks.set(pid, stat.ticks);
      }
      const figures = this.figures.get(name) ?? { peakMb: 0, cpuSum: 0, samples: 0 };
      figures.peakMb = Math.max(figures.peakMb, memoryMb(pids));
      const previous = this.last.get(name);
      if (previous !== undefined && at > previous.at) {
        // Only processes seen in both samples: one that started or ended in between is not counted.
        let used = 0;
        for (const [pid, now] of ticks) used += now - (previous.ticks.get(pid) ?? now);
        figures.cpuSum += ((used / CLOCK_TICKS) * 1000 * 100) / (at - previous.at);
        figures.samples++;
      }
      this.figures.set(name, figures);
      this.last.set(name, { ticks, at });
    }
  }
}

/** CPU seconds one target used over a phase of a run. */
export interface CpuUse {
  name: string;
  seconds: number;
}

/**
 * The CPU each target has used so far (clock ticks, its processes summed); diff two to get a
 * phase's. A process of a tree that ends in between (a PostgreSQL backend) leaves its ticks with
 * the parent that reaps it, so the sum never goes back.
 */
export function cpuTicks(targets: Target[]): Map<string, number> {
  const used = (pid: number): number => {
    const stat = procStat(pid);
    return stat === undefined ? 0 : stat.ticks + stat.reapedTicks;
  };
  return new Map(targets.map(({ name, pids }) => [name, pids.reduce((sum, pid) => sum + used(pid), 0)]));
}

/** What each target used between two `cpuTicks` readings, in core-seconds. */
export function cpuBetween(before: Map<string, number>, after: Map<string, number>): CpuUse[] {
  return [...after].map(([name, ticks]) => ({ name, seconds: (ticks - (before.get(name) ?? ticks)) / CLOCK_TICKS }));
}
