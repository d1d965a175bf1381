/**
 * Where the offline Temporal toolchain lives (built by scripts/toolchain.sh). Environment
 * overrides win; when neither an override nor the cache exists, callers fall back to the
 * SDK's own download, which works on machines that reach Temporal's release servers.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { LocalTestWorkflowEnvironmentOptions } from '@temporalio/testing';
import { searchAttributeKeys } from '../workflows/operator-view.js';
import { projectPath } from '../project.js';

function versions(): Record<string, string> {
  const text = readFileSync(projectPath('scripts', 'toolchain.env'), 'utf8');
  return Object.fromEntries(
    text
      .split('\n')
      .filter((line) => /^[A-Z_]+=/.test(line))
      .map((line) => line.split('=', 2) as [string, string]),
  );
}

export function toolchainDir(): string {
  return (
    process.env['WL_TOOLCHAIN_DIR'] ??
    join(process.env['XDG_CACHE_HOME'] ?? join(homedir(), '.cache'), 'workspace-lifecycle', 'toolchain')
  );
}

function resolve(override: string, cached: string): string | undefined {
  const fromEnv = process.env[override];
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new Error(`${override}=${fromEnv} does not exist; run scripts/toolchain.sh`);
    return fromEnv;
  }
  return existsSync(cached) ? cached : undefined;
}

/** The version of the Temporal CLI whose dev server the toolchain builds. */
export function temporalCliVersion(): string {
  return versions()['TEMPORAL_CLI_VERSION'] ?? '';
}

/** The Temporal dev server (scripts/dev-server/main.go on the CLI's module). */
export function temporalCliPath(): string | undefined {
  return resolve('TEMPORAL_CLI_PATH', join(toolchainDir(), `temporal-cli-${temporalCliVersion()}`, 'temporal'));
}

/**
 * promtool, built from the Prometheus module by `scripts/toolchain.sh --promtool`; undefined
 * when it was not built (the rules check of test/helpers/prometheus.ts stands in).
 */
export function promtoolPath(): string | undefined {
  const version = versions()['PROMTOOL_VERSION'] ?? '';
  return resolve('PROMTOOL_PATH', join(toolchainDir(), `promtool-${version}`, 'promtool'));
}

/** The Java time-skipping test server wrapper. */
export function testServerPath(): string | undefined {
  const version = versions()['TEMPORAL_TEST_SERVER_VERSION'] ?? '';
  return resolve(
    'TEMPORAL_TEST_SERVER_PATH',
    join(toolchainDir(), `temporal-test-server-${version}`, 'temporal-test-server'),
  );
}

/** `executable` option for the SDK's ephemeral servers, or undefined to let the SDK download. */
export function existingPath(
  path: string | undefined,
): { executable: { type: 'existing-path'; path: string } } | undefined {
  return path === undefined ? undefined : { executable: { type: 'existing-path', path } };
}

/** Options for `TestWorkflowEnvironment.createLocal`: our dev server, with our search attributes registered. */
export function devServerEnvOptions(): LocalTestWorkflowEnvironmentOptions {
  return { server: { ...existingPath(temporalCliPath()), searchAttributes: [...searchAttributeKeys] } };
}
