-- Up Migration

-- What the API's fleet gauges count besides the status (api/metrics.ts): an operator holds the
-- workspace (cordon), its runtime crash-loops (automatic restarts back off). Written with the
-- projection, by the workflow (docs/restarts.md).
ALTER TABLE workspaces
  ADD COLUMN cordoned BOOLEAN NOT NULL DEFAULT false,
  ADD COLUMN crash_looping BOOLEAN NOT NULL DEFAULT false;

