/**
 * How activities reach a workspace's box. The workflow never sees a driver: it calls
 * activities, and the worker picks the driver, so an SSH or cloud driver slots in here.
 * Every method is idempotent for its key, because activities are retried.
 */
import type { StagedPlugin } from '../plugins/stage.js';

export interface BoxDriver {
  /** The plugin's plugin.yaml text on the box, null when the file is not there. Throws when the box cannot be read. */
  readPluginManifest(workspaceId: string, pluginName: string): Promise<string | null>;
  /** Installs the staged plugin; a second call for the same revision changes nothing. */
  deliverPlugin(workspaceId: string, plugin: StagedPlugin): Promise<'delivered' | 'already-present'>;
  /** Restarts the box's runtime; a second call with the same restart id changes nothing. */
  restart(workspaceId: string, restartId: string): Promise<'restarted' | 'already-restarted'>;
  isRunning(workspaceId: string): Promise<boolean>;
  /** Stops the box's runtime for good (the workspace is removed); a stopped or missing box changes nothing. */
  stop(workspaceId: string): Promise<'stopped' | 'already-stopped'>;
}

/** The box does not exist or cannot be reached; retrying may help (it may be booting). */
export class BoxUnavailableError extends Error {
  override readonly name = 'BoxUnavailableError';
}
