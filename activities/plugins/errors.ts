/**
 * A problem with a plugin that retrying cannot fix (bad source, missing ref, wrong manifest,
 * unsafe name, too large). Activities turn it into a non-retryable failure; everything else
 * (network, disk, a busy box) is thrown as a plain error and retried with backoff.
 */
export class PermanentPluginError extends Error {
  override readonly name = 'PermanentPluginError';
}

/** Plugin names become directory names on the box: one safe path segment. */
export const SAFE_PLUGIN_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function assertSafePluginName(name: string, what: string): void {
  if (!SAFE_PLUGIN_NAME.test(name) || name.includes('..')) {
    throw new PermanentPluginError(
      `${what} ${JSON.stringify(name)} is not a safe plugin name (letters, digits, '.', '_', '-'; no '..'; at most 128 characters)`,
    );
  }
}
