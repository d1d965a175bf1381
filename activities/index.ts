export { reconcilePlugins } from './reconcile.js';
