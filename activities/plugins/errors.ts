/**
 * A problem with a plugin that retrying cannot fix (bad source, missing ref, wrong manifest,
 * unsafe name, too large). Activities turn it into a non-retryable failure; everything else
 * (network, disk, a busy box) is thrown as a plain error and retried with backoff.
 */
export class PermanentPluginError extends Error {
  override readonly name = 'PermanentPluginError';
}

/**
 * A source's git host could not be resolved now (the resolver did not answer): retrying may
 * pass, so activities retry it and the API answers 503.
 */
export class ResolverUnavailableError extends Error {
  override readonly name = 'ResolverUnavailableError';
}

/** Plugin names become directory names on the box: one safe path segment. */
export const SAFE_PLUGIN_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * Suffixes of the work folders a delivery or removal makes beside a plugin (`<name>.incoming`,
 * `<name>.removing`): a plugin of such a name would be skipped by every listing and wiped by its
 * neighbour's delivery.
 */
export const INCOMING_SUFFIX = '.incoming';
export const REMOVING_SUFFIX = '.removing';
export const WORK_FOLDER_SUFFIXES = [INCOMING_SUFFIX, REMOVING_SUFFIX] as const;

export function isSafePluginName(name: string): boolean {
  return SAFE_PLUGIN_NAME.test(name) && !name.includes('..') && !WORK_FOLDER_SUFFIXES.some((s) => name.endsWith(s));
}

export function assertSafePluginName(name: string, what: string): void {
  if (!isSafePluginName(name)) {
    throw new PermanentPluginError(
      `${what} ${JSON.stringify(name)} is not a safe plugin name (letters, digits, '.', '_', '-'; no '..'; not ending in .incoming or .removing; at most 128 characters)`,
    );
  }
}
