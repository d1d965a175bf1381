/**
 * How activities reach a workspace's box. The workflow never sees a driver: it calls
 * activities, and the worker picks the driver, so an SSH or cloud driver slots in here.
 * Every method is idempotent for its key, because activities are retried.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { StagedPlugin } from '../plugins/stage.js';

export interface BoxDriver {
  /** The plugin's plugin.yaml text on the box, null when the file is not there. Throws when the box cannot be read. */
  readPluginManifest(workspaceId: string, pluginName: string): Promise<string | null>;
  /**
   * Every plugin on the box in one listing: its manifest text and the revision a delivery
   * recorded beside it (null for one the service did not deliver, e.g. baked into the image).
   * Throws when the box cannot be read.
   */
  listPlugins(workspaceId: string): Promise<BoxPlugin[]>;
  /** Installs the staged plugin; a second call for the same revision changes nothing. */
  deliverPlugin(workspaceId: string, plugin: StagedPlugin): Promise<'delivered' | 'already-present'>;
  /** Removes the plugin from the box whole (never half a folder); an absent plugin changes nothing. */
  removePlugin(workspaceId: string, pluginName: string): Promise<'removed' | 'already-absent'>;
  /**
   * Writes the one-time boot credential where the box's runtime reads it when it registers
   * (BOOT_CREDENTIAL_FILE in the box, readable by the runtime's user only), replacing any before.
   */
  writeBootCredential(workspaceId: string, credential: string): Promise<void>;
  /** Restarts the box's runtime; a second call with the same restart id changes nothing. */
  restart(workspaceId: string, restartId: string): Promise<'restarted' | 'already-restarted'>;
  isRunning(workspaceId: string): Promise<boolean>;
  /** Stops the box's runtime for good (the workspace is removed); a stopped or missing box changes nothing. */
  stop(workspaceId: string): Promise<'stopped' | 'already-stopped'>;
}

export interface BoxPlugin {
  name: string;
  /** The plugin.yaml text. */
  manifest: string;
  /** The revision recorded by the delivery that put it there; null when none did. */
  revision: string | null;
}

/** The boot credential's file, at the top of the box; the runtime reads it when it registers. */
export const BOOT_CREDENTIAL_FILE = 'boot-credential';

/*
 * What the worker reads from a box is bounded: past its cap an operation fails, non-retryably
 * (BoxOutputTooLarge, naming the cap), and the worker never holds more than the cap. A box is
 * untrusted, and one box must not grow the worker every workspace shares. One plugin.yaml is
 * capped at MAX_MANIFEST_BYTES (plugins/stage.ts), staged or read from a box.
 */

/** A small record kept in the box: a delivered revision, a restart or launch id, a process id. */
export const MAX_RECORD_BYTES = 4096;
/** A whole plugin listing: every plugin's name, manifest and revision. */
export const MAX_LISTING_BYTES = 8 * 1024 * 1024;

/** The box does not exist or cannot be reached; retrying may help (it may be booting). */
export class BoxUnavailableError extends Error {
  override readonly name = 'BoxUnavailableError';
}

/**
 * What a box driver throws when retrying cannot help and a person must act (the box's host key
 * changed, its login refuses the key, the key file is missing; the box holds a link where the
 * driver reads or needs a folder, BoxUnsafePath, or more than a cap allows, BoxOutputTooLarge):
 * a non-retryable failure whose message names the fix. It is thrown as Temporal's own non-retryable failure so that every
 * activity calling the driver fails at once, with no conversion for a new activity to forget.
 */
export const PERMANENT_BOX_ERROR_TYPES = [
  'BoxHostKeyMismatch',
  'BoxAuthRefused',
  'BoxKeyMissing',
  'BoxKeyUnusable',
  'BoxSettingsInvalid',
  'BoxStopUnsupported',
  'BoxUnsafePath',
  'BoxOutputTooLarge',
] as const;
export type PermanentBoxErrorType = (typeof PERMANENT_BOX_ERROR_TYPES)[number];

export function permanentBoxError(type: PermanentBoxErrorType, message: string): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true });
}

/** Whether a driver's error is one of the permanent box errors (never to be read as "uncertain"). */
export function isPermanentBoxError(err: unknown): err is ApplicationFailure {
  return (
    err instanceof ApplicationFailure &&
    err.nonRetryable === true &&
    (PERMANENT_BOX_ERROR_TYPES as readonly (string | null | undefined)[]).includes(err.type)
  );
}
