/**
 * The local box driver's restart is idempotent for its restart id even when the process doing
 * it dies mid-way: the launched runtime records itself, so a retry finds the restart done.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalBoxDriver, processAlive, processRunning, stopProcess } from '../../activities/box/local.js';
import { fileScratchDir } from '../helpers/scratch.js';

const root = fileScratchDir('local-driver');
// A runtime that takes half a second to stop, as a real one drains.
const runtimeCommand = ['/bin/sh', '-c', 'trap "sleep 0.5; exit 0" TERM; while :; do sleep 0.1; done'];
const driver = new LocalBoxDriver({ root, runtimeCommand });
const started: string[] = [];

afterAll(async () => {
  for (const id of started) await driver.stopRuntime(id);
});

function restartEvents(id: string): string[] {
  const text = readFileSync(join(driver.boxDir(id), 'box-events.log'), 'utf8');
  return text
    .trim()
    .split('\n')
    .map((line) => line.split(' ').slice(1).join(' '))
    .filter((line) => line.startsWith('restart'));
}

async function boot(id: string): Promise<number> {
  started.push(id);
  await driver.createBox(id);
  await driver.startRuntime(id);
  const pid = await driver.runtimePid(id);
  if (pid === null) throw new Error('no runtime');
  return pid;
}

describe('LocalBoxDriver.restart', () => {
  it('restarts once per restart id: a second call changes nothing', async () => {
    const first = await boot('twice');
    expect(await driver.runtimeRecord('twice')).toEqual({ pid: first, launchId: 'boot' });
    expect(await driver.restart('twice', 'restart-a')).toBe('restarted');
    const second = await driver.runtimePid('twice');
    expect(second).not.toBe(first);
    expect(await processRunning(first)).toBe(false);
    expect(await driver.restart('twice', 'restart-a')).toBe('already-restarted');
    expect(await driver.runtimePid('twice')).toBe(second);
    expect(restartEvents('twice')).toEqual(['restart restart-a']);
  });

  it('a process killed right after launching the new runtime: the retry does not restart again', async () => {
    const old = await boot('killed');
    // Another process runs the restart and is SIGKILLed the moment the new runtime exists.
    const script = join(root, 'restart-once.mts');
    const driverModule = fileURLToPath(new URL('../../activities/box/local.ts', import.meta.url));
    writeFileSync(
      script,
      `import { LocalBoxDriver } from ${JSON.stringify(driverModule)};\n` +
        `await new LocalBoxDriver({ root: ${JSON.stringify(root)}, runtimeCommand: ${JSON.stringify(runtimeCommand)} })` +
        `.restart('killed', 'restart-k');\n`,
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: 'ignore' });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const deadline = Date.now() + 20_000;
    let launched: number | null = old;
    while (launched === old && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 2));
      launched = await driver.runtimePid('killed');
    }
    child.kill('SIGKILL');
    await exited;
    expect(launched).not.toBe(old);
    started.push('killed');

    // The activity's retry on another worker.
    expect(await driver.restart('killed', 'restart-k')).toBe('already-restarted');
    expect(await driver.runtimePid('killed')).toBe(launched);
    expect(processAlive(launched ?? 0)).toBe(true);
    expect(restartEvents('killed')).toEqual(['restart restart-k']);
  });

  it('a process killed after stopping the old runtime and before launching: the retry launches once', async () => {
    await boot('half');
    await driver.stopRuntime('half'); // what the dead process had done
    expect(await driver.isRunning('half')).toBe(false);
    expect(await driver.restart('half', 'restart-h')).toBe('restarted');
    expect(await driver.isRunning('half')).toBe(true);
    expect(restartEvents('half')).toEqual(['restart restart-h']);
  });

  it('without a runtime command the restart is recorded, and idempotent', async () => {
    const bare = new LocalBoxDriver({ root, runtimeCommand: null });
    await bare.createBox('bare');
    expect(await bare.restart('bare', 'restart-1')).toBe('restarted');
    expect(await bare.restart('bare', 'restart-1')).toBe('already-restarted');
    expect(await bare.isRunning('bare')).toBe(false);
  });
});

describe('stopProcess', () => {
  /** Starts `script` under sh and returns its pid and the first line it prints. */
  async function launch(script: string): Promise<{ pid: number; line: string }> {
    const child = spawn('/bin/sh', ['-c', script], { stdio: ['ignore', 'pipe', 'ignore'] });
    const line = await new Promise<string>((resolve) =>
      child.stdout.once('data', (data) => resolve(String(data).trim())),
    );
    return { pid: child.pid ?? 0, line };
  }

  it('a process that ignores SIGTERM is killed, and runs no more when the stop returns', async () => {
    const { pid } = await launch('trap "" TERM; echo ready; while :; do sleep 0.1; done');
    expect(await processRunning(pid)).toBe(true);
    await stopProcess(pid, 200);
    expect(await processRunning(pid)).toBe(false);
  });

  it('a process that exited and waits to be reaped answers signal 0, yet runs no more', async () => {
    // `exec sleep` never reaps the background child, which stays a zombie until sleep ends.
    const { pid: parent, line } = await launch('sleep 0 & echo $!; exec sleep 30');
    const zombie = Number(line);
    const deadline = Date.now() + 10_000;
    while ((await processRunning(zombie)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(processAlive(zombie)).toBe(true);
    expect(await processRunning(zombie)).toBe(false);
    await stopProcess(zombie, 1_000); // nothing left to stop: returns at once
    await stopProcess(parent, 1_000);
  });
});
