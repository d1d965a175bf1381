-- Up Migration

-- When each API process last served, one row per instance (its host and port), written every few
-- seconds while it is ready (api/serving.ts). The fleet liveness controller reads the newest:
-- no API served within its grace is a disruption, not a fleet gone silent (docs/fleet-liveness.md).
-- Times are the database's, like the heartbeat ledger's.
CREATE TABLE api_serving (
  instance       TEXT PRIMARY KEY,
  last_served_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
