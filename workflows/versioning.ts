/**
 * Worker Versioning inside a workflow (docs/versioning.md): a run is pinned to the build that
 * started it; once another build is the deployment's current one, the run moves to it by
 * continuing as new, its first task then going to the current build.
 */
import { workflowInfo } from '@temporalio/workflow';

export function newBuildIsCurrent(): boolean {
  return workflowInfo().targetWorkerDeploymentVersionChanged;
}

/** The options of the run's continue-as-new: onto the current build when it changed. */
export function continueAsNewOptions(): { initialVersioningBehavior?: 'AUTO_UPGRADE' } {
  return newBuildIsCurrent() ? { initialVersioningBehavior: 'AUTO_UPGRADE' } : {};
}
