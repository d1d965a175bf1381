import './stack-traces.js';
export { workspaceWorkflow } from './workspace.js';
