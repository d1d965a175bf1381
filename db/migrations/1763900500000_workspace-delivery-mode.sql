-- Up Migration

-- The workspace's delivery mode as the workflow last decided it (projection), so the API can
-- answer a register that omits it without asking the workflow (which needs a worker).
ALTER TABLE workspaces ADD COLUMN delivery_mode TEXT CHECK (delivery_mode IN ('push', 'poll'));
