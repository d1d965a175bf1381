-- The active tasks of the last heartbeat recorded: a restart that only loads plugins drains them,
-- and an online workspace's heartbeats mostly stay in the ledger, unforwarded.
-- bigint: a heartbeat may report any safe integer (2^53 - 1), past an integer's range.
ALTER TABLE workspace_heartbeats ADD COLUMN active_tasks bigint NOT NULL DEFAULT 0;
