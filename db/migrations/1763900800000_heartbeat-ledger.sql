-- Up Migration

-- The heartbeat ledger: every heartbeat the API acknowledges is recorded here, and only those
-- that can change the workspace's state (or the first after an interval) are forwarded to its
-- workflow as a signal. The workflow reads `last_seen_at` whenever a liveness rule decides
-- (the liveness TTL, the 15 s "recent" window), so coalescing never changes a verdict.
--   last_seen_at the last heartbeat recorded; NULL in a row a register noted before any heartbeat
--   pending      heartbeats acknowledged since the last forward (the next forward carries them)
--   forwarded_at when the last forward was decided; NULL: the next heartbeat is forwarded
--   signature    what the rules read from the last forwarded heartbeat (health class, runtime
--                state, agent card); a heartbeat with another signature is forwarded at once.
--                'register' (signatures are JSON arrays, never this word): the last forward was
--                a register the API relayed
-- A hot row per workspace, updated on every heartbeat: room on each page for in-place updates.
CREATE TABLE workspace_heartbeats (
  workspace_id  TEXT PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
  last_seen_at  TIMESTAMPTZ,
  pending       INTEGER NOT NULL DEFAULT 0,
  forwarded_at  TIMESTAMPTZ,
  signature     TEXT
) WITH (fillfactor = 50);

-- One round trip per heartbeat: the workspace's status, the bearer's token, the ledger row, and
-- whether to forward. Outcomes other than 'ok' (unknown or removed workspace, a token that is not
-- this workspace's live one) change nothing; the API works out their exact answer itself.
-- A status other than online/degraded forwards every heartbeat (it can bring the workspace
-- online), except right after a register the API relayed: a register brings the workspace
-- online, so until the next forward is due only a heartbeat that degrades an online workspace
-- (p_degrades) goes at once, even while the projection still says provisioning.
CREATE FUNCTION record_heartbeat(
  p_token_hash BYTEA,
  p_workspace_id TEXT,
  p_signature TEXT,
  p_degrades BOOLEAN,
  p_forward_every_ms INTEGER
)
RETURNS TABLE (outcome TEXT, forward BOOLEAN, beats INTEGER)
LANGUAGE plpgsql AS $$
DECLARE
  v_status TEXT;
  v_owner TEXT;
  v_row workspace_heartbeats%ROWTYPE;
  v_due BOOLEAN;
  v_after_register BOOLEAN;
  v_forward BOOLEAN;
BEGIN
  SELECT CASE WHEN w.removed_at IS NULL THEN w.status ELSE 'removed' END INTO v_status
    FROM workspaces w WHERE w.id = p_workspace_id;
  IF v_status IS NULL OR v_status = 'removed' THEN
    RETURN QUERY SELECT 'not-found'::TEXT, FALSE, 0;
    RETURN;
  END IF;
  SELECT t.workspace_id INTO v_owner FROM workspace_tokens t
    WHERE t.token_hash = p_token_hash AND t.revoked_at IS NULL;
  IF v_owner IS DISTINCT FROM p_workspace_id THEN
    RETURN QUERY SELECT 'unauthorized'::TEXT, FALSE, 0;
    RETURN;
  END IF;
  INSERT INTO workspace_heartbeats (workspace_id) VALUES (p_workspace_id) ON CONFLICT DO NOTHING;
  SELECT * INTO v_row FROM workspace_heartbeats h WHERE h.workspace_id = p_workspace_id FOR UPDATE;
  v_due := v_row.forwarded_at IS NULL
    OR v_row.forwarded_at <= now() - make_interval(secs => p_forward_every_ms / 1000.0);
  v_after_register := v_row.signature = 'register' AND NOT v_due;
  v_forward := v_due
    OR (v_status NOT IN ('online', 'degraded') AND NOT v_after_register)
    OR CASE WHEN v_after_register THEN p_degrades ELSE v_row.signature IS DISTINCT FROM p_signature END;
  UPDATE workspace_heartbeats SET
    last_seen_at = now(),
    pending      = CASE WHEN v_forward THEN 0 ELSE v_row.pending + 1 END,
    forwarded_at = CASE WHEN v_forward THEN now() ELSE v_row.forwarded_at END,
    signature    = CASE WHEN v_forward THEN p_signature ELSE v_row.signature END
  WHERE workspace_id = p_workspace_id;
  RETURN QUERY SELECT 'ok'::TEXT, v_forward, CASE WHEN v_forward THEN v_row.pending + 1 ELSE 0 END;
END $$;
