/**
 * The SSH box driver: a workspace's box is a directory on a host the worker reaches over SSH,
 * with the local driver's layout (`<root>/configs/plugins/<name>/plugin.yaml`, a `.revision`
 * beside a delivered plugin, `<name>.incoming` swapped in whole, `<name>.removing` on the way
 * out, `box-events.log`). Each operation is one small POSIX shell script run by the system's
 * `ssh` client: its own host-key check against the one pinned key, its key handling and its
 * error messages, with nothing reimplemented here.
 *
 * The host key is pinned per workspace and never accepted unseen: a box whose key changed fails
 * permanently with a message naming the fix, as does a login that refuses the key. A box that
 * cannot be reached (refused, timed out, no route, unknown name) is a BoxUnavailableError, which
 * the callers retry.
 *
 * The box folder belongs to the box's runtime, which can put links, fifos and huge files in it.
 * The scripts follow no link where they read or write (`[ -L ]` first, files written new under
 * noclobber, a link where a file is renamed to removed first) and refuse a link where they read
 * or need a folder (BoxUnsafePath, naming the path); they read at most one byte past a cap
 * (`head -c`), and the worker stops reading a box's answer at its cap and kills the ssh
 * (BoxOutputTooLarge), so no box can make the worker hold more.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertSafePluginName } from '../plugins/errors.js';
import { MANIFEST_FILE, MAX_MANIFEST_BYTES, type StagedPlugin } from '../plugins/stage.js';
import { inspectTree } from '../plugins/tree.js';
import {
  BOOT_CREDENTIAL_FILE,
  BoxUnavailableError,
  MAX_LISTING_BYTES,
  MAX_RECORD_BYTES,
  permanentBoxError,
  type BoxDriver,
  type BoxPlugin,
} from './driver.js';
import { BOX_EVENTS_FILE, INCOMING_SUFFIX, REMOVING_SUFFIX, REVISION_FILE } from './local.js';
import { parseSshBoxSettings, type SshBoxSettings } from './ssh-settings.js';

/** How the worker reaches one workspace's box. */
export type SshBoxSettingsResolver = (workspaceId: string) => Promise<SshBoxSettings | null>;

export interface SshDriverOptions {
  /** A workspace's SSH settings; null when it has none. */
  resolve: SshBoxSettingsResolver;
  /** The worker's directory of private key files, which `keyRef` names. */
  keyDir: string;
  /** How long `ssh` waits for the connection (seconds); under the box probe's 10 s budget. */
  connectTimeoutSeconds?: number;
  /** How long one operation may take before `ssh` is killed; a delivery gets `transferTimeoutMs`. */
  commandTimeoutMs?: number;
  transferTimeoutMs?: number;
  /** Reuse one connection per box for 60 s (OpenSSH's connection sharing); default on. */
  shareConnections?: boolean;
  /** The client program; default `ssh` from PATH. */
  sshPath?: string;
}

/** The restart id of the last restart that ran, in the box. */
export const RESTART_ID_FILE = '.restart-id';

/** Exit codes of the box-side scripts; ssh itself exits 255, which none of them uses. */
const EXIT_NO_BOX = 3;
const EXIT_ABSENT = 4;
const EXIT_STOP_UNSUPPORTED = 8;
/** A file on the box past its cap (the script names it). */
const EXIT_TOO_LARGE = 9;
/** A link where the script reads or needs a folder, or a fifo where it needs a file (the script names it). */
const EXIT_UNSAFE = 10;
const SSH_FAILED = 255;
/** The most of a box's refusal message the worker repeats. */
const REFUSAL_KEEP_CHARS = 500;

/**
 * Shell functions every box script has. `folder`/`regular` refuse a link at a path, or anything
 * but a folder/regular file there (nothing there is fine); `capped` prints a file if it holds at
 * most the cap (else refuses, naming it); `fresh` clears the way for a file to be created new
 * (under `set -C`, whose O_EXCL open fails rather than follow a link put there since); `replace`
 * renames a file over another, taking away a link there first, so `mv` never moves it into the
 * folder a link leads to.
 */
const BOX_FUNCTIONS = [
  `refuse() { printf '%s\n' "$1" >&2; exit ${EXIT_UNSAFE}; }`,
  'folder() { if [ -L "$1" ]; then refuse "$1 is a symbolic link where the driver needs a folder; the driver follows no link in a box folder: remove it"; fi; ' +
    'if [ -e "$1" ] && [ ! -d "$1" ]; then refuse "$1 is not a folder: remove it"; fi; }',
  'regular() { if [ -L "$1" ]; then refuse "$1 is a symbolic link where the driver needs a regular file; the driver follows no link in a box folder: remove it"; fi; ' +
    'if [ -e "$1" ] && [ ! -f "$1" ]; then refuse "$1 is not a regular file: remove it"; fi; }',
  // $1 file, $2 cap, $3 what it is: the text in variable `v` (trailing newlines kept).
  'capped() { v=$(head -c $(($2 + 1)) "$1" && printf x) || return 1; v=${v%x}; ' +
    `if [ \${#v} -gt "$2" ]; then printf '%s\n' "$1 holds more than $2 bytes, the cap for $3; the worker reads no more of it: fix or remove it" >&2; exit ${EXIT_TOO_LARGE}; fi; }`,
  'fresh() { if [ -d "$1" ] && [ ! -L "$1" ]; then refuse "$1 is a folder where the driver writes a file: remove it"; fi; rm -f "$1" || exit 5; }',
  'replace() { if [ -L "$2" ]; then rm -f "$2" || exit 5; fi; ' +
    'if [ -d "$2" ]; then refuse "$2 is a folder where the driver writes a file: remove it"; fi; mv -f "$1" "$2"; }',
  `event() { printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" >> ${BOX_EVENTS_FILE}; }`,
  // Every change appends to the event log: checked first, so a refused operation changed nothing.
  `regular ${BOX_EVENTS_FILE}`,
];

const STDERR_KEEP_BYTES = 16 * 1024;
const MAX_SOCKET_PATH_BYTES = 100;

export class SshBoxDriver implements BoxDriver {
  private readonly connectTimeoutSeconds: number;
  private readonly commandTimeoutMs: number;
  private readonly transferTimeoutMs: number;
  private readonly shareConnections: boolean;
  private readonly sshPath: string;
  /** Per-driver files: each box's one-line known-hosts file and its shared-connection socket. */
  private stateDir: Promise<string> | null = null;
  /** The connections (by key) this driver made, whose shared connection `close()` ends. */
  private readonly connections = new Set<string>();

  constructor(private readonly options: SshDriverOptions) {
    this.connectTimeoutSeconds = options.connectTimeoutSeconds ?? 5;
    this.commandTimeoutMs = options.commandTimeoutMs ?? 60_000;
    this.transferTimeoutMs = options.transferTimeoutMs ?? 10 * 60_000;
    this.shareConnections = options.shareConnections ?? true;
    this.sshPath = options.sshPath ?? 'ssh';
  }

  async readPluginManifest(workspaceId: string, pluginName: string): Promise<string | null> {
    assertSafePluginName(pluginName, 'plugin name');
    const result = await this.run(
      workspaceId,
      [
        `t=configs/plugins/${q(pluginName)}`,
        `folder configs; folder configs/plugins; folder "$t"; regular "$t/${MANIFEST_FILE}"`,
        `[ -f "$t/${MANIFEST_FILE}" ] || exit ${EXIT_ABSENT}`,
        `exec head -c ${MAX_MANIFEST_BYTES + 1} "$t/${MANIFEST_FILE}"`,
      ],
      { maxOutput: { bytes: MAX_MANIFEST_BYTES, what: 'a plugin manifest' } },
    );
    if (result.code === EXIT_ABSENT) return null;
    this.expectSuccess(workspaceId, 'read plugin manifest', result);
    return result.stdout.toString('utf8');
  }

  async listPlugins(workspaceId: string): Promise<BoxPlugin[]> {
    // One round trip: each plugin as a header line of byte counts, then its name, manifest and
    // revision back to back. A file is read into a variable once (with a sentinel, so trailing
    // newlines survive), so its count and its bytes always agree even while a delivery swaps it.
    const result = await this.run(
      workspaceId,
      [
        'LC_ALL=C; export LC_ALL',
        'folder configs; folder configs/plugins',
        'for d in configs/plugins/*; do',
        '  n=${d#configs/plugins/}',
        `  case $n in '*'|*${INCOMING_SUFFIX}|*${REMOVING_SUFFIX}) continue;; esac`,
        '  if [ -L "$d" ]; then refuse "$d is a symbolic link where the driver needs a plugin folder; the driver follows no link in a box folder: remove it"; fi',
        '  [ -d "$d" ] || continue',
        `  regular "$d/${MANIFEST_FILE}"; regular "$d/${REVISION_FILE}"`,
        `  [ -f "$d/${MANIFEST_FILE}" ] || continue`,
        `  capped "$d/${MANIFEST_FILE}" ${MAX_MANIFEST_BYTES} 'a plugin manifest' || continue`,
        '  m=$v',
        `  if [ -f "$d/${REVISION_FILE}" ] && capped "$d/${REVISION_FILE}" ${MAX_RECORD_BYTES} 'a recorded revision'; then`,
        '    printf \'%s %s %s\\n%s%s%s\' ${#n} ${#m} ${#v} "$n" "$m" "$v"',
        '  else',
        '    printf \'%s %s -\\n%s%s\' ${#n} ${#m} "$n" "$m"',
        '  fi',
        'done',
      ],
      { maxOutput: { bytes: MAX_LISTING_BYTES, what: 'a plugin listing' } },
    );
    this.expectSuccess(workspaceId, 'list plugins', result);
    return parsePluginListing(result.stdout).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async deliverPlugin(workspaceId: string, plugin: StagedPlugin): Promise<'delivered' | 'already-present'> {
    assertSafePluginName(plugin.pluginName, 'plugin name');
    // The staged tree is checked again before a byte of it leaves for the box.
    await inspectTree(plugin.path, `staged plugin ${plugin.pluginName} at ${plugin.path}`);
    const target = `configs/plugins/${plugin.pluginName}`;
    // Present means what a listing counts: the manifest there too, not a folder emptied by hand.
    const current = await this.run(
      workspaceId,
      [
        't=' + q(target),
        `folder configs; folder configs/plugins; folder "$t"; regular "$t/${MANIFEST_FILE}"; regular "$t/${REVISION_FILE}"`,
        `[ -f "$t/${MANIFEST_FILE}" ] && [ -f "$t/${REVISION_FILE}" ] || exit 0`,
        `exec head -c ${MAX_RECORD_BYTES + 1} "$t/${REVISION_FILE}"`,
      ],
      { maxOutput: { bytes: MAX_RECORD_BYTES, what: 'a recorded revision' } },
    );
    this.expectSuccess(workspaceId, 'read plugin revision', current);
    if (current.stdout.toString('utf8') === plugin.revision) return 'already-present';

    // The staged tree streams as a tar into `<name>.incoming`, a folder the script makes anew
    // (whatever was there, a link too, is removed first, never followed); only once the local
    // tar is known to have sent all of it is the folder given its revision and swapped in whole
    // (a second round trip): the runtime never sees half a plugin, and a retried delivery starts
    // afresh.
    const upload = await this.run(
      workspaceId,
      [
        't=' + q(target),
        'folder configs; folder configs/plugins',
        'mkdir -p configs/plugins || exit 5',
        `rm -rf "$t${INCOMING_SUFFIX}" && mkdir "$t${INCOMING_SUFFIX}" || exit 5`,
        `tar -C "$t${INCOMING_SUFFIX}" --no-same-owner -xf - || exit 5`,
      ],
      { pipeFrom: ['tar', '-C', plugin.path, '-cf', '-', '.'], timeoutMs: this.transferTimeoutMs },
    );
    // A tar that failed is the cause of whatever the box then said about its input.
    if (upload.producer !== undefined && upload.producer.code !== 0)
      throw new Error(`tar of ${plugin.path} failed (exit ${upload.producer.code}): ${tail(upload.producer.stderr)}`);
    this.expectSuccess(workspaceId, 'deliver plugin', upload);
    const swap = await this.run(workspaceId, [
      't=' + q(target),
      `folder configs; folder configs/plugins; folder "$t${INCOMING_SUFFIX}"`,
      `[ -d "$t${INCOMING_SUFFIX}" ] || exit 5`,
      `r="$t${INCOMING_SUFFIX}/${REVISION_FILE}"; fresh "$r"`,
      `(set -C; printf '%s' ${q(plugin.revision)} > "$r") || exit 5`,
      `rm -rf "$t" && mv "$t${INCOMING_SUFFIX}" "$t" || exit 5`,
      `event ${q(`deliver ${plugin.pluginName} ${plugin.revision}`)}`,
    ]);
    this.expectSuccess(workspaceId, 'deliver plugin', swap);
    return 'delivered';
  }

  async removePlugin(workspaceId: string, pluginName: string): Promise<'removed' | 'already-absent'> {
    assertSafePluginName(pluginName, 'plugin name');
    // Renamed away first (one step), so the runtime never loads half a plugin; then deleted. A
    // plugin that is a link is taken away itself (mv and rm -rf never follow one).
    const result = await this.run(workspaceId, [
      `t=configs/plugins/${q(pluginName)}`,
      'folder configs; folder configs/plugins',
      `if [ -e "$t" ] || [ -L "$t" ]; then`,
      `  rm -rf "$t${REMOVING_SUFFIX}" && mv "$t" "$t${REMOVING_SUFFIX}" && rm -rf "$t${REMOVING_SUFFIX}" || exit 5`,
      `  event ${q(`remove ${pluginName}`)}`,
      '  echo removed',
      'else',
      `  rm -rf "$t${REMOVING_SUFFIX}" || exit 5`,
      '  echo already-absent',
      'fi',
    ]);
    this.expectSuccess(workspaceId, 'remove plugin', result);
    return result.stdout.toString('utf8').trim() === 'removed' ? 'removed' : 'already-absent';
  }

  async writeBootCredential(workspaceId: string, credential: string): Promise<void> {
    // The credential travels on stdin, never on a command line (which other users of the host
    // can read); it is written beside into a file created new and private, then swapped in whole.
    const file = q(BOOT_CREDENTIAL_FILE);
    const result = await this.run(
      workspaceId,
      [
        'umask 077',
        `fresh ${file}.tmp`,
        `(set -C; cat > ${file}.tmp) && chmod 600 ${file}.tmp && replace ${file}.tmp ${file} || exit 5`,
      ],
      { input: `${credential}\n` },
    );
    this.expectSuccess(workspaceId, 'write boot credential', result);
  }

  /**
   * Runs the restart command unless the box records this restart id as done. The id is recorded
   * after the command succeeds, so a worker that dies in between restarts the box once more on
   * retry: a restart twice, never none.
   */
  async restart(workspaceId: string, restartId: string): Promise<'restarted' | 'already-restarted'> {
    const settings = await this.settings(workspaceId);
    const result = await this.run(
      workspaceId,
      [
        `regular ${RESTART_ID_FILE}`,
        `if [ -f ${RESTART_ID_FILE} ] && capped ${RESTART_ID_FILE} ${MAX_RECORD_BYTES} 'a restart id' && [ "$v" = ${q(`${restartId}\n`)} ]; then echo already-restarted; exit 0; fi`,
        // Its output goes to a file, so a runtime it leaves in the background does not hold the session open.
        'fresh restart.log',
        `(set -C; exec /bin/sh -c ${q(settings.restartCommand)} </dev/null >restart.log 2>&1)`,
        'c=$?',
        'if [ $c -ne 0 ]; then echo "restart command exited with $c:" >&2; tail -n 20 restart.log >&2; exit 6; fi',
        `fresh ${RESTART_ID_FILE}.tmp`,
        `(set -C; printf '%s\\n' ${q(restartId)} > ${RESTART_ID_FILE}.tmp) && replace ${RESTART_ID_FILE}.tmp ${RESTART_ID_FILE} || exit 5`,
        `event ${q(`restart ${restartId}`)}`,
        'echo restarted',
      ],
      { settings },
    );
    this.expectSuccess(workspaceId, 'restart', result);
    return result.stdout.toString('utf8').trim() === 'restarted' ? 'restarted' : 'already-restarted';
  }

  async isRunning(workspaceId: string): Promise<boolean> {
    const settings = await this.settings(workspaceId);
    const result = await this.run(
      workspaceId,
      [
        `/bin/sh -c ${q(settings.runningCommand)} </dev/null >/dev/null`,
        'c=$?',
        'case $c in 0|1) exit $c;; esac',
        'echo "running command exited with $c (expected 0: running, 1: not running)" >&2',
        'exit 7',
      ],
      { settings },
    );
    if (result.code === 1) return false;
    this.expectSuccess(workspaceId, 'is-running probe', result);
    return true;
  }

  async stop(workspaceId: string): Promise<'stopped' | 'already-stopped'> {
    const settings = await this.settings(workspaceId);
    const lines = [
      `/bin/sh -c ${q(settings.runningCommand)} </dev/null >/dev/null 2>&1`,
      'if [ $? -eq 1 ]; then echo already-stopped; exit 0; fi',
    ];
    if (settings.stopCommand === undefined) lines.push(`exit ${EXIT_STOP_UNSUPPORTED}`);
    else
      lines.push(
        'fresh stop.log',
        `(set -C; exec /bin/sh -c ${q(settings.stopCommand)} </dev/null >stop.log 2>&1)`,
        'c=$?',
        'if [ $c -ne 0 ]; then echo "stop command exited with $c:" >&2; tail -n 20 stop.log >&2; exit 6; fi',
        "event 'stop'",
        'echo stopped',
      );
    const result = await this.run(workspaceId, lines, { settings, missingBox: 'already-stopped' });
    if (result.code === EXIT_STOP_UNSUPPORTED)
      throw permanentBoxError(
        'BoxStopUnsupported',
        `the runtime of workspace ${workspaceId}'s box is running and its SSH settings have no stopCommand: ` +
          `stop it on ${where(settings)} by hand, or set stopCommand with PUT /workspaces/${workspaceId}/box`,
      );
    this.expectSuccess(workspaceId, 'stop', result);
    return result.stdout.toString('utf8').trim() === 'stopped' ? 'stopped' : 'already-stopped';
  }

  /** Ends the shared connections this driver opened and deletes its files (worker shutdown, tests). */
  async close(): Promise<void> {
    const dir = this.stateDir;
    this.stateDir = null;
    if (dir === null) return;
    const path = await dir;
    if (this.shareConnections)
      await Promise.all(
        [...this.connections].map((key) =>
          runProcess(
            this.sshPath,
            ['-F', '/dev/null', '-o', `ControlPath=${join(path, `c-${key}`)}`, '-O', 'exit', 'box'],
            {
              timeoutMs: 5_000,
            },
          ).catch(() => undefined),
        ),
      );
    this.connections.clear();
    await rm(path, { recursive: true, force: true });
  }

  /** The workspace's settings, validated: none, or invalid ones, can only be fixed by a person. */
  private async settings(workspaceId: string): Promise<SshBoxSettings> {
    const found = await this.options.resolve(workspaceId);
    if (found === null)
      throw new BoxUnavailableError(
        `workspace ${workspaceId} has no SSH settings for its box: set them with PUT /workspaces/${workspaceId}/box`,
      );
    const parsed = parseSshBoxSettings(found);
    if (typeof parsed === 'string')
      throw permanentBoxError(
        'BoxSettingsInvalid',
        `SSH settings of workspace ${workspaceId} are invalid (${parsed}): fix them with PUT /workspaces/${workspaceId}/box`,
      );
    return parsed;
  }

  /**
   * Runs a box-side script in the box's root (exit 3 when the root is missing) with the
   * BOX_FUNCTIONS defined. ssh's own failures, a box's refusal (a link, a file past its cap) and
   * an answer past `maxOutput` (default: MAX_RECORD_BYTES) are thrown here; the script's other
   * exit codes are the caller's to read.
   */
  private async run(
    workspaceId: string,
    lines: string[],
    extra: {
      settings?: SshBoxSettings;
      input?: string;
      /** A local program whose output is the script's input. */
      pipeFrom?: string[];
      timeoutMs?: number;
      /** Printed instead of failing when the box's root is missing. */
      missingBox?: string;
      /** The most bytes of the script's output the worker takes, and what that output is. */
      maxOutput?: { bytes: number; what: string };
    } = {},
  ): Promise<ProcessResult> {
    const settings = extra.settings ?? (await this.settings(workspaceId));
    const noBox =
      extra.missingBox === undefined
        ? `{ echo "box directory $root does not exist" >&2; exit ${EXIT_NO_BOX}; }`
        : `{ echo ${q(extra.missingBox)}; exit 0; }`;
    const script = [`root=${q(settings.root)}`, `cd "$root" 2>/dev/null || ${noBox}`, ...BOX_FUNCTIONS, ...lines].join(
      '\n',
    );
    const args = await this.sshArgs(workspaceId, settings);
    // The login shell only starts /bin/sh, so every script runs in the same POSIX shell.
    const maxOutput = extra.maxOutput ?? { bytes: MAX_RECORD_BYTES, what: "a box script's answer" };
    const result = await runProcess(this.sshPath, [...args, `exec /bin/sh -c ${q(script)}`], {
      timeoutMs: extra.timeoutMs ?? this.commandTimeoutMs,
      maxStdoutBytes: maxOutput.bytes,
      ...(extra.input === undefined ? {} : { input: extra.input }),
      ...(extra.pipeFrom === undefined ? {} : { pipeFrom: extra.pipeFrom }),
    });
    if (result.overflowed)
      throw permanentBoxError(
        'BoxOutputTooLarge',
        `box of workspace ${workspaceId} at ${where(settings)} sent more than ${maxOutput.bytes} bytes, the cap for ` +
          `${maxOutput.what}; the worker stopped reading it: fix or remove what the box holds there`,
      );
    if (result.timedOut)
      throw new BoxUnavailableError(
        `box of workspace ${workspaceId} at ${where(settings)} did not answer within ${extra.timeoutMs ?? this.commandTimeoutMs} ms`,
      );
    if (result.code === SSH_FAILED) throw sshFailure(workspaceId, settings, this.options.keyDir, result.stderr);
    if (result.code === EXIT_NO_BOX)
      throw new BoxUnavailableError(
        `box of workspace ${workspaceId} at ${where(settings)}: ${lastLine(result.stderr)}`,
      );
    if (result.code === EXIT_UNSAFE || result.code === EXIT_TOO_LARGE)
      throw permanentBoxError(
        result.code === EXIT_UNSAFE ? 'BoxUnsafePath' : 'BoxOutputTooLarge',
        `box of workspace ${workspaceId} at ${where(settings)} (in ${settings.root}): ` +
          lastLine(result.stderr).slice(0, REFUSAL_KEEP_CHARS),
      );
    return result;
  }

  private expectSuccess(workspaceId: string, what: string, result: ProcessResult): void {
    if (result.code !== 0)
      throw new Error(
        `${what} on the box of workspace ${workspaceId} failed (exit ${result.code}): ${tail(result.stderr)}`,
      );
  }

  private async sshArgs(workspaceId: string, settings: SshBoxSettings): Promise<string[]> {
    const keyFile = join(this.options.keyDir, settings.keyRef);
    try {
      await access(keyFile, constants.R_OK);
    } catch {
      throw permanentBoxError(
        'BoxKeyMissing',
        `private key ${JSON.stringify(settings.keyRef)} for workspace ${workspaceId} is not readable in the worker's key ` +
          `directory ${this.options.keyDir}: put the key there (mode 600), or set the right keyRef with PUT /workspaces/${workspaceId}/box`,
      );
    }
    const dir = await this.ensureStateDir();
    // Keyed by everything the connection depends on, so a changed pin or key never reuses an old connection.
    const key = createHash('sha256')
      .update(JSON.stringify([settings.host, settings.port, settings.user, settings.keyRef, settings.hostKey]))
      .digest('hex')
      .slice(0, 16);
    const knownHosts = join(dir, `known_hosts-${key}`);
    // Checked each time, as a cleaner of temporary files may have deleted it: a missing file
    // would read as a host key mismatch. Written whole (beside, then renamed), so a connection
    // made meanwhile never reads half of it.
    const present = await access(knownHosts).then(
      () => true,
      () => false,
    );
    if (!present) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const temporary = `${knownHosts}.${process.pid}-${randomBytes(4).toString('hex')}`;
      await writeFile(temporary, `${knownHostsPattern(settings)} ${settings.hostKey}\n`, { mode: 0o600 });
      await rename(temporary, knownHosts);
    }
    this.connections.add(key);
    const controlPath = join(dir, `c-${key}`);
    const args = [
      // No user or system configuration: the settings here are the whole story.
      '-F',
      '/dev/null',
      '-o',
      'BatchMode=yes',
      '-o',
      'StrictHostKeyChecking=yes',
      '-o',
      `UserKnownHostsFile=${knownHosts}`,
      '-o',
      'GlobalKnownHostsFile=/dev/null',
      '-o',
      'UpdateHostKeys=no',
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'IdentityAgent=none',
      '-o',
      `ConnectTimeout=${this.connectTimeoutSeconds}`,
      '-o',
      'ServerAliveInterval=10',
      '-o',
      'ServerAliveCountMax=3',
      '-i',
      keyFile,
      '-p',
      String(settings.port),
      '-l',
      settings.user,
    ];
    // A Unix socket's path has room for about 100 bytes; a longer one would fail every call.
    if (this.shareConnections && Buffer.byteLength(controlPath) < MAX_SOCKET_PATH_BYTES)
      args.push('-o', 'ControlMaster=auto', '-o', `ControlPath=${controlPath}`, '-o', 'ControlPersist=60s');
    return [...args, '--', settings.host];
  }

  private ensureStateDir(): Promise<string> {
    // Short and private: a control socket's path must fit a Unix socket address.
    this.stateDir ??= mkdtemp(join(tmpdir(), 'wl-ssh-'));
    return this.stateDir;
  }
}

/** ssh exited 255: its own failure, told apart by its message. */
function sshFailure(workspaceId: string, settings: SshBoxSettings, keyDir: string, stderr: string): Error {
  const box = where(settings);
  const fix = `PUT /workspaces/${workspaceId}/box`;
  if (/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/i.test(stderr))
    return permanentBoxError(
      'BoxHostKeyMismatch',
      `host key of ${box} does not match the pinned key for workspace ${workspaceId}: if the box was rebuilt, ` +
        `set its new host key with ${fix} (read it from the box itself, never accept it unseen); otherwise ` +
        `something else answers at that address`,
    );
  if (/UNPROTECTED PRIVATE KEY FILE|bad permissions|Load key .*: (?:invalid format|error in libcrypto)/i.test(stderr))
    return permanentBoxError(
      'BoxKeyUnusable',
      `ssh will not use the private key ${JSON.stringify(settings.keyRef)} in ${keyDir} for workspace ${workspaceId}: ` +
        `${lastMatchingLine(stderr, /permissions|load key|ignored/i)}; make it a private key file readable by the ` +
        `worker only (chmod 600)`,
    );
  if (/Permission denied/i.test(stderr))
    return permanentBoxError(
      'BoxAuthRefused',
      `${box} refused the key ${JSON.stringify(settings.keyRef)} for user ${settings.user} (workspace ${workspaceId}): ` +
        `add the key's public half to ${settings.user}'s authorized_keys on the box, or set the right user or keyRef with ${fix}`,
    );
  return new BoxUnavailableError(`box of workspace ${workspaceId} at ${box} is unreachable: ${tail(stderr)}`);
}

/** The known-hosts pattern ssh looks the box up by: the host, or `[host]:port` off port 22. */
function knownHostsPattern(settings: SshBoxSettings): string {
  const host = settings.host.toLowerCase();
  return settings.port === 22 ? host : `[${host}]:${settings.port}`;
}

function where(settings: SshBoxSettings): string {
  return `${settings.user}@${settings.host}:${settings.port}`;
}

/** Single-quotes a value for a POSIX shell. */
export function q(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/** Parses the listing framing: `<name bytes> <manifest bytes> <revision bytes | ->\n` then the bytes. */
export function parsePluginListing(output: Buffer): BoxPlugin[] {
  const plugins: BoxPlugin[] = [];
  let at = 0;
  while (at < output.length) {
    const newline = output.indexOf(0x0a, at);
    const header = newline < 0 ? null : /^(\d+) (\d+) (\d+|-)$/.exec(output.toString('latin1', at, newline));
    if (newline < 0 || header === null) throw new Error(`unreadable plugin listing from the box at byte ${at}`);
    const [, nameBytes = '0', manifestBytes = '0', revisionBytes = '-'] = header;
    let from = newline + 1;
    const take = (bytes: number): string => {
      if (from + bytes > output.length) throw new Error('plugin listing from the box ends early');
      const text = output.toString('utf8', from, from + bytes);
      from += bytes;
      return text;
    };
    const name = take(Number(nameBytes));
    const manifest = take(Number(manifestBytes));
    const revision = revisionBytes === '-' ? null : take(Number(revisionBytes));
    plugins.push({ name, manifest, revision });
    at = from;
  }
  return plugins;
}

interface ProcessResult {
  code: number;
  stdout: Buffer;
  stderr: string;
  timedOut: boolean;
  /** It wrote more than `maxStdoutBytes`: it was killed, and `stdout` is empty. */
  overflowed: boolean;
  /** The exit of the program piped in, when there was one. */
  producer?: { code: number; stderr: string };
}

/**
 * Runs a program to its end, collecting its output; killed after `timeoutMs`, or as soon as its
 * output passes `maxStdoutBytes` (what it wrote is then dropped: the caller never holds more
 * than the cap). Its input is a string, or the output of `pipeFrom` through a pipe between the
 * two processes.
 */
function runProcess(
  program: string,
  args: string[],
  options: { timeoutMs: number; maxStdoutBytes?: number; input?: string; pipeFrom?: string[] },
): Promise<ProcessResult> {
  return new Promise((resolve, reject) => {
    const piped = options.input !== undefined || options.pipeFrom !== undefined;
    const child = spawn(program, args, { stdio: [piped ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    let producer: ChildProcess | undefined;
    let producerDone: Promise<{ code: number; stderr: string }> | undefined;
    const [producerProgram, ...producerArgs] = options.pipeFrom ?? [];
    if (producerProgram !== undefined && child.stdin !== null && child.pid !== undefined) {
      producer = spawn(producerProgram, producerArgs, { stdio: ['ignore', child.stdin, 'pipe'] });
      producerDone = exited(producer);
      // The producer holds the pipe's writing end now; ours is closed, so the reader sees the
      // end of input when the producer exits.
      child.stdin.destroy();
    }
    const stdout: Buffer[] = [];
    const maxStdoutBytes = options.maxStdoutBytes ?? Infinity;
    let stdoutBytes = 0;
    let overflowed = false;
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs);
    child.stdout?.on('data', (chunk: Buffer) => {
      if (overflowed) return;
      stdoutBytes += chunk.length;
      if (stdoutBytes <= maxStdoutBytes) {
        stdout.push(chunk);
        return;
      }
      // Past the cap: drop what was held, stop reading (the writer then gets EPIPE) and kill it.
      overflowed = true;
      stdout.length = 0;
      child.stdout?.destroy();
      child.kill('SIGKILL');
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-STDERR_KEEP_BYTES);
    });
    if (options.input !== undefined) {
      // A child that exits before reading its input must not crash the worker.
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(options.input);
    }
    child.once('error', (err) => {
      clearTimeout(timer);
      producer?.kill('SIGKILL');
      reject(
        new Error(`could not run ${program}: ${err.message} (is OpenSSH's client installed? see scripts/sshd.sh)`),
      );
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      // A reader that ended early leaves nobody to read the producer's output.
      if (producer !== undefined && producer.exitCode === null) producer.kill('SIGKILL');
      const done = {
        code: code ?? (signal === null ? -1 : 128),
        stdout: Buffer.concat(stdout),
        stderr,
        timedOut,
        overflowed,
      };
      if (producerDone === undefined) resolve(done);
      else void producerDone.then((result) => resolve({ ...done, producer: result }));
    });
  });
}

/** A process's exit code and error output, once it ends. */
function exited(child: ChildProcess): Promise<{ code: number; stderr: string }> {
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-STDERR_KEEP_BYTES)));
  return new Promise((resolve) => {
    child.once('error', (err) => resolve({ code: -1, stderr: err.message }));
    child.once('close', (code) => resolve({ code: code ?? -1, stderr }));
  });
}

function lastLine(text: string): string {
  return text.trim().split('\n').pop() ?? '';
}

function tail(text: string): string {
  return text.trim().split('\n').slice(-5).join(' | ') || '(no error output)';
}

function lastMatchingLine(text: string, pattern: RegExp): string {
  return (
    text
      .split('\n')
      .filter((line) => pattern.test(line))
      .map((line) => line.replace(/^@+|@+$/g, '').trim())
      .pop() ?? lastLine(text)
  );
}
