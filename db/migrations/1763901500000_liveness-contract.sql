-- Up Migration

-- The heartbeat ledger becomes the workspace's lease (docs/fleet-liveness.md). The workflow
-- publishes its liveness contract into its row with every projection write; the API records
-- each heartbeat in one statement and forwards exactly those the contract wants; the fleet
-- liveness controller finds the leases that expired. Every time in the row is the database's.
--   last_seen_at       the last heartbeat recorded (a wanted one once the workflow has it)
--   beats              heartbeats recorded
--   want               which heartbeats the workflow wants: 'any' (the next), 'degrading',
--                      'recovering', 'none'; a first agent card is wanted whatever the want
--   want_version       the projection version the contract was published with
--   delivered_version  the highest contract version a wanted heartbeat was delivered for: once
--                      the workflow has one, the rest wait for its next contract
--   degrade_error_rate, recover_error_rate  the workflow's own thresholds
--   has_card           the workflow holds an agent card
--   lease_watched      silence past ttl_ms is a verdict for this workspace
--   lease_since        the last sign of life the workflow itself knew when it published
--   signalled_version  the contract version whose expired lease the controller signalled
--   restart_key, restart_at  the restart in progress and when it began
-- A heartbeat writes only last_seen_at and beats, neither indexed, so its update stays HOT.
DROP FUNCTION record_heartbeat(BYTEA, TEXT, TEXT, BOOLEAN, INTEGER);
ALTER TABLE workspace_heartbeats
  DROP COLUMN pending,
  DROP COLUMN forwarded_at,
  DROP COLUMN signature,
  ADD COLUMN beats BIGINT NOT NULL DEFAULT 0,
  ADD COLUMN want TEXT NOT NULL DEFAULT 'any' CHECK (want IN ('any', 'degrading', 'recovering', 'none')),
  ADD COLUMN want_version BIGINT NOT NULL DEFAULT 1,
  ADD COLUMN delivered_version BIGINT NOT NULL DEFAULT 0,
  ADD COLUMN degrade_error_rate DOUBLE PRECISION NOT NULL DEFAULT 0.5,
  ADD COLUMN recover_error_rate DOUBLE PRECISION NOT NULL DEFAULT 0.1,
  ADD COLUMN has_card BOOLEAN NOT NULL DEFAULT FALSE,
  ADD COLUMN lease_watched BOOLEAN NOT NULL DEFAULT FALSE,
  ADD COLUMN ttl_ms INTEGER NOT NULL DEFAULT 180000 CHECK (ttl_ms > 0),
  ADD COLUMN lease_since TIMESTAMPTZ NOT NULL DEFAULT now(),
  ADD COLUMN signalled_version BIGINT NOT NULL DEFAULT 0,
  ADD COLUMN restart_key TEXT,
  ADD COLUMN restart_at TIMESTAMPTZ;

-- Every workspace has its row from its creation: a heartbeat updates it and never inserts one.
INSERT INTO workspace_heartbeats (workspace_id) SELECT id FROM workspaces ON CONFLICT DO NOTHING;

-- The forward rule, the same as heartbeatWanted in workflows/state-machine/liveness.ts (a test
-- compares the two on generated inputs). Inlined by the planner into the heartbeat's statement.
CREATE FUNCTION heartbeat_wanted(
  p_want TEXT,
  p_want_version BIGINT,
  p_delivered_version BIGINT,
  p_degrade_error_rate DOUBLE PRECISION,
  p_recover_error_rate DOUBLE PRECISION,
  p_has_card BOOLEAN,
  p_error_rate DOUBLE PRECISION,
  p_runtime_state TEXT,
  p_manages_own_status BOOLEAN,
  p_brings_card BOOLEAN
)
RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT p_delivered_version < p_want_version AND (
    (p_brings_card AND NOT p_has_card)
    OR p_want = 'any'
    OR (p_want = 'degrading'
        AND (p_runtime_state = 'wedged' OR (NOT p_manages_own_status AND p_error_rate >= p_degrade_error_rate)))
    OR (p_want = 'recovering'
        AND p_runtime_state = '' AND NOT p_manages_own_status
        AND p_error_rate < p_recover_error_rate AND p_error_rate < p_degrade_error_rate)
  )
$$;
