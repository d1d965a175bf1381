import './stack-traces.js';
export { workspaceWorkflow } from './workspace.js';
export { fleetLivenessWorkflow } from './fleet-liveness.js';
