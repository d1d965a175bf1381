import { idleHeartbeat, type HeartbeatInput, type RegisterPayload } from '../../workflows/payloads.js';

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
  return { ...idleHeartbeat(workspaceId, 60), ...overrides };
}
