-- Up Migration

-- When the API accepted the workspace's removal. The API refuses every later call for the
-- workspace from the moment it answers the removal, before the workflow has written the
-- `removed` projection (which follows its own transitions, a little later).
ALTER TABLE workspaces ADD COLUMN removed_at TIMESTAMPTZ;
