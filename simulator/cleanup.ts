/**
 * Undoing a simulation: each workspace it created is deprovisioned, its runtime stopped and its
 * box folder deleted; with `--ssh`, the sshd stops and its key goes. With `--keep`, all of it
 * stays and the simulator says how to stop the sshd.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { WorkspaceState } from '../workflows/state-machine.js';
import { describeError, errorText } from './http.js';
import type { Api, Simulation, Tracked } from './simulation.js';

/** How long cleanup waits for each workspace to be removed (a restart in flight finishes first). */
const REMOVE_TIMEOUT_MS = 30_000;
/** How long cleanup waits for the worker's stop of a removed workspace's box reached over SSH. */
const WORKER_STOP_WAIT_MS = 10_000;

/** Cleans up (or, with `keep`, says what stays); what failed goes to the simulation's failures. */
export async function cleanup(sim: Simulation): Promise<void> {
  const { options, tracked, ssh } = sim;
  if (options.keep) {
    sim.say(`--keep: leaving ${tracked.length} workspace(s) and their runtimes running`);
  } else if (tracked.length > 0) {
    sim.failures.push(...(await deprovision(sim)));
  }
  if (ssh === null) return;
  process.off('exit', sim.abandonSsh);
  if (options.keep) {
    await ssh.leave();
    sim.say(
      `--keep: leaving the sshd running for the worker (pid ${ssh.sshd.pid}, 127.0.0.1:${ssh.sshd.port}, ` +
        `its files in ${ssh.dir}) and the key ${ssh.keyFile}; stop it with \`kill ${ssh.sshd.pid}\` ` +
        'and delete both once the workspaces are gone',
    );
  } else {
    const problems = await ssh.close();
    for (const problem of problems) sim.say(`--ssh cleanup FAILED: ${problem}`);
    if (problems.length === 0) sim.say(`--ssh: sshd stopped; key ${ssh.keyFile} and ${ssh.dir} deleted`);
    sim.failures.push(...problems.map((problem) => `--ssh cleanup: ${problem}`));
  }
}

/**
 * Deprovisions each workspace: DELETE, then waits until it is removed with no restart in flight
 * (a restart still running would start its runtime again), stops its runtime and deletes its box
 * folder. Says what it did for each; returns one line per thing that failed.
 */
async function deprovision(sim: Simulation): Promise<string[]> {
  sim.say('== cleanup: deprovisioning the simulated workspaces');
  const failed = await Promise.all(sim.tracked.map((t) => deprovisionOne(sim, t)));
  const failures = failed.flat();
  sim.say(`== cleanup: ${failures.length === 0 ? 'done' : `FAILED (${failures.length} problem(s))`}`);
  return failures;
}

async function deprovisionOne(sim: Simulation, t: Tracked): Promise<string[]> {
  const { driver } = sim;
  const overSsh = sim.ssh !== null;
  const problems: string[] = [];
  const removal = await removeWorkspace(sim.api, t.id);
  if (removal !== null) problems.push(removal);
  // The worker stops a removed workspace's box just after it reads as removed: over SSH, that
  // stop is part of what is shown, so it gets the time to happen before the simulator's own.
  let stoppedBy = '';
  if (overSsh && removal === null) {
    const deadline = Date.now() + WORKER_STOP_WAIT_MS;
    // A runtime that saw its workspace removed may have exited by itself, leaving nothing to
    // stop; the worker's stop records itself a moment after its runtime is gone.
    let goneSince: number | null = null;
    while (Date.now() < deadline && !(await stoppedOverSsh(t.boxDir))) {
      if ((await driver.liveRuntimePid(t.id)) === null) goneSince ??= Date.now();
      if (goneSince !== null && Date.now() - goneSince > 2_000) break;
      await sleep(200);
    }
    if (await stoppedOverSsh(t.boxDir)) stoppedBy = ' by the worker over SSH';
  }
  try {
    const stopped = await driver.stopRuntime(t.id);
    if (overSsh && stoppedBy === '' && !stopped) stoppedBy = ' (it had exited by itself)';
  } catch (err) {
    problems.push(`stopping its runtime failed: ${describeError(err)}`);
  }
  try {
    await rm(t.boxDir, { recursive: true, force: true });
  } catch (err) {
    problems.push(`deleting its box ${t.boxDir} failed: ${describeError(err)}`);
  }
  if (problems.length === 0) sim.say(`${sim.pad(t.id)} removed; runtime stopped${stoppedBy}; box ${t.boxDir} deleted`);
  for (const problem of problems) sim.say(`${sim.pad(t.id)} cleanup FAILED: ${problem}`);
  return problems.map((problem) => `cleanup of ${t.id}: ${problem}`);
}

/** The SSH driver recorded a stop in the box (`event 'stop'` in `box-events.log`). */
async function stoppedOverSsh(boxDir: string): Promise<boolean> {
  const events = await readFile(join(boxDir, 'box-events.log'), 'utf8').catch(() => '');
  return / stop$/m.test(events);
}

/** DELETE, then wait until GET says 404 or removed with no restart in flight; null when it was, else why not. */
async function removeWorkspace(api: Api, id: string): Promise<string | null> {
  try {
    const answer = await api.call('DELETE', `/workspaces/${id}`);
    // 404: already removed (or never made it to the database).
    if (answer.status !== 202 && answer.status !== 404)
      return `DELETE answered ${answer.status} ${errorText(answer.body)}`;
  } catch (err) {
    return `DELETE failed: ${describeError(err)}`;
  }
  const deadline = Date.now() + REMOVE_TIMEOUT_MS;
  for (;;) {
    let last: string;
    try {
      const { status, body } = await api.call('GET', `/workspaces/${id}`);
      if (status === 404) return null;
      if (status === 200) {
        const state = body as WorkspaceState;
        if (state.status === 'removed' && !state.restart.inFlight) return null;
        last = `status ${state.status}${state.restart.inFlight ? ', a restart in flight' : ''}`;
      } else {
        last = `GET answered ${status} ${errorText(body)}`;
      }
    } catch (err) {
      last = `GET failed: ${describeError(err)}`;
    }
    if (Date.now() > deadline)
      return (
        `not removed within ${REMOVE_TIMEOUT_MS / 1000}s (last: ${last}); its runtime was stopped anyway, ` +
        'but a restart still in flight may start it again'
      );
    await sleep(500);
  }
}
