/** What the tests of `npm start` and `npm run start:cluster` share: a fresh machine's environment, and a port check. */
import { connect } from 'node:net';

/**
 * The test process's environment as on a fresh machine: no database, no Temporal address, no
 * admin token, the default runtime, the workflows bundled as the worker starts; then `settings`.
 */
export function freshMachineEnv(settings: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const unset = new Set([
    'DATABASE_URL',
    'TEMPORAL_ADDRESS',
    'WL_ADMIN_TOKEN',
    'WL_RUNTIME_COMMAND',
    'WL_WORKFLOW_BUNDLE',
  ]);
  return { ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !unset.has(name))), ...settings };
}

/** Whether something accepts connections on the loopback port now. */
export function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}
