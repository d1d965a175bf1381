-- Up Migration

-- Orders projection writes: the workflow numbers its transitions, and a write only lands if
-- it is newer than what the row holds, so a retried or late activity never regresses it.
ALTER TABLE workspaces ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
