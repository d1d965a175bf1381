-- Up Migration

-- A row the API notes for a register has seen no heartbeat yet (a register is not a heartbeat,
-- and the liveness rules read last_seen_at): NULL until the first heartbeat is recorded.
ALTER TABLE workspace_heartbeats ALTER COLUMN last_seen_at DROP NOT NULL, ALTER COLUMN last_seen_at DROP DEFAULT;
