/**
 * The end of a simulation: one last poll, then per workspace where it ended up, the kill's
 * outcome, each phase's, and with `--ssh` what shows the boxes were reached over SSH.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RESTART_ID_FILE } from '../activities/box/ssh.js';
import { SSH_BOOT_RESTART_ID } from './phases.js';
import type { KillReport, Simulation, WorkspaceReport } from './simulation.js';
import type { SimulatedSshBoxes } from './ssh.js';
import { installedCount, pollAll } from './watch.js';

/** Says the summary and returns each workspace's report. */
export async function summary(sim: Simulation, kill: KillReport | null): Promise<WorkspaceReport[]> {
  await pollAll(sim);
  const workspaces: WorkspaceReport[] = sim.tracked.map((t) => {
    const s = t.state;
    return {
      id: t.id,
      boxDir: t.boxDir,
      transitions: t.transitions,
      status: s?.status ?? null,
      pluginsInstalled: s ? installedCount(s) : 0,
      pluginsDeclared: sim.options.plugins,
      pluginErrors: s
        ? Object.entries(s.plugins).flatMap(([name, p]) => (p.error !== null ? [`${name}: ${p.error}`] : []))
        : [],
      restarts: s?.restart.count ?? 0,
      lastRestartReason: s?.restart.lastReason ?? null,
      runtimePid: t.pid,
    };
  });
  sim.say('== summary');
  for (const w of workspaces) {
    sim.say(
      `${sim.pad(w.id)} ${(w.status ?? 'unknown').padEnd(12)} plugins ${w.pluginsInstalled}/${w.pluginsDeclared} installed  ` +
        `restarts ${w.restarts}  last restart: ${w.lastRestartReason ?? '-'}  runtime pid ${w.runtimePid ?? '-'}`,
    );
    for (const error of w.pluginErrors) sim.say(`${sim.pad(w.id)}   plugin error: ${error}`);
  }
  if (kill !== null) {
    sim.say(
      `kill: ${kill.workspaceId} pid ${kill.killedPid ?? '-'} → verdicts ${kill.verdicts.map((v) => v.verdict).join(', ') || 'none'}; ` +
        `declared dead: ${kill.declaredDead ? 'yes' : 'no'}; restarted: ${kill.restarted ? 'yes' : 'no'}; ` +
        `back online with pid ${kill.newPid ?? '-'}: ${kill.backOnline ? 'yes' : 'no'}`,
    );
  }
  for (const p of sim.phases)
    sim.say(`phase ${p.ok ? 'ok    ' : 'FAILED'} ${(p.ms / 1000).toFixed(1).padStart(6)}s  ${p.name}`);
  if (sim.ssh !== null) await sayOverSsh(sim, sim.ssh);
  return workspaces;
}

/**
 * What shows the boxes were reached over SSH: the sshd's logins, and in each box the restarts
 * the SSH driver recorded (`box-events.log`, `.restart-id`) and the restart command's output.
 */
async function sayOverSsh(sim: Simulation, ssh: SimulatedSshBoxes): Promise<void> {
  sim.say(`--ssh: the sshd accepted ${await ssh.logins()} login(s) (${ssh.sshd.log})`);
  for (const t of sim.tracked) {
    const events = await readFile(join(t.boxDir, 'box-events.log'), 'utf8').catch(() => '');
    const restarts = events.split('\n').filter((line) => / restart /.test(line) && !line.endsWith(SSH_BOOT_RESTART_ID));
    const last = (await readFile(join(t.boxDir, RESTART_ID_FILE), 'utf8').catch(() => '')).trim();
    const log = (await readFile(join(t.boxDir, 'restart.log'), 'utf8').catch(() => '')).trim().split('\n').pop();
    sim.say(
      `${sim.pad(t.id)} restarts by the worker over SSH: ${restarts.length}; ${RESTART_ID_FILE} ${last || '-'}; ` +
        `restart.log: ${log || '-'}`,
    );
  }
}
