-- The active tasks of the last heartbeat recorded: a restart that only loads plugins drains them,
-- and an online workspace's heartbeats mostly stay in the ledger, unforwarded.
ALTER TABLE workspace_heartbeats ADD COLUMN active_tasks integer NOT NULL DEFAULT 0;
