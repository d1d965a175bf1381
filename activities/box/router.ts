/**
 * The worker's box driver: each operation goes to the driver the workspace's box settings name
 * (`workspaces.box`, set with `PUT /workspaces/:id/box`): SSH for a box on another host, the
 * worker's local driver otherwise. Read per operation, so a changed setting (a rebuilt box's new
 * host key) counts from the next operation on; box operations are rare (reconcile, restarts,
 * probes), never per heartbeat.
 */
import { permanentBoxError, type BoxDriver, type BoxPlugin } from './driver.js';
import { SshBoxDriver } from './ssh.js';
import { isSshBox, storedSshSettings, type SshBoxSettings } from './ssh-settings.js';
import type { StagedPlugin } from '../plugins/stage.js';

/** Reads a workspace's stored box settings (null: the default driver). */
export type BoxSettingsReader = (workspaceId: string) => Promise<unknown>;

/** The stored settings of an SSH box, validated; null when the box is not reached over SSH. */
export async function sshSettingsOf(read: BoxSettingsReader, workspaceId: string): Promise<SshBoxSettings | null> {
  const parsed = storedSshSettings(await read(workspaceId));
  if (typeof parsed === 'string')
    throw permanentBoxError(
      'BoxSettingsInvalid',
      `workspace ${workspaceId} has invalid SSH box settings (${parsed}): set them again with PUT /workspaces/${workspaceId}/box`,
    );
  return parsed;
}

export class BoxRouter implements BoxDriver {
  readonly ssh: SshBoxDriver;

  constructor(
    private readonly local: BoxDriver,
    private readonly read: BoxSettingsReader,
    sshKeyDir: string,
  ) {
    this.ssh = new SshBoxDriver({ resolve: (workspaceId) => sshSettingsOf(read, workspaceId), keyDir: sshKeyDir });
  }

  /** The driver for this workspace's box. */
  async driverFor(workspaceId: string): Promise<BoxDriver> {
    return isSshBox(await this.read(workspaceId)) ? this.ssh : this.local;
  }

  async readPluginManifest(workspaceId: string, pluginName: string): Promise<string | null> {
    return (await this.driverFor(workspaceId)).readPluginManifest(workspaceId, pluginName);
  }
  async listPlugins(workspaceId: string): Promise<BoxPlugin[]> {
    return (await this.driverFor(workspaceId)).listPlugins(workspaceId);
  }
  async deliverPlugin(workspaceId: string, plugin: StagedPlugin): Promise<'delivered' | 'already-present'> {
    return (await this.driverFor(workspaceId)).deliverPlugin(workspaceId, plugin);
  }
  async removePlugin(workspaceId: string, pluginName: string): Promise<'removed' | 'already-absent'> {
    return (await this.driverFor(workspaceId)).removePlugin(workspaceId, pluginName);
  }
  async writeBootCredential(workspaceId: string, credential: string): Promise<void> {
    return (await this.driverFor(workspaceId)).writeBootCredential(workspaceId, credential);
  }
  async restart(workspaceId: string, restartId: string): Promise<'restarted' | 'already-restarted'> {
    return (await this.driverFor(workspaceId)).restart(workspaceId, restartId);
  }
  async isRunning(workspaceId: string): Promise<boolean> {
    return (await this.driverFor(workspaceId)).isRunning(workspaceId);
  }
  async stop(workspaceId: string): Promise<'stopped' | 'already-stopped'> {
    return (await this.driverFor(workspaceId)).stop(workspaceId);
  }

  /** Ends the SSH driver's shared connections. */
  async close(): Promise<void> {
    await this.ssh.close();
  }
}
