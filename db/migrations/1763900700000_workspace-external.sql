-- Up Migration

-- Whether the workspace's runtime runs outside the service (created awaiting its agent): the
-- service never probes, restarts or delivers to it, and its register defaults to poll mode.
ALTER TABLE workspaces ADD COLUMN external BOOLEAN NOT NULL DEFAULT false;
