import type { HeartbeatInput, RegisterPayload } from '../../workflows/payloads.js';

export function registerPayload(workspaceId: string, overrides: Partial<RegisterPayload> = {}): RegisterPayload {
  return {
    id: workspaceId,
    url: `http://box-${workspaceId}.internal:8000`,
    agent_card: { name: `agent ${workspaceId}`, description: 'test agent', skills: [{ id: 'seo' }] },
    delivery_mode: 'push',
    ...overrides,
  };
}

export function heartbeatPayload(workspaceId: string, overrides: Partial<HeartbeatInput> = {}): HeartbeatInput {
  return {
    workspace_id: workspaceId,
    error_rate: 0,
    sample_error: '',
    active_tasks: 0,
    current_task: '',
    uptime_seconds: 60,
    ...overrides,
  };
}
