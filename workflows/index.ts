export { workspaceWorkflow } from './workspace.js';
