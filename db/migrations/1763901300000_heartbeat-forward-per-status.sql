-- Up Migration

-- A workspace that is not online or degraded forwarded every heartbeat at once (any can bring
-- it online), except right after a register. When the workflows lag (a whole fleet starting at
-- once, each workspace several tasks to set up), every still-provisioning workspace then
-- sent one urgent signal per heartbeat, each adding work to the server that was already behind,
-- while the API held its answer for the slow signal and refused the rest with 429.
--
-- Now a forward (a register or a heartbeat) made since the workspace entered its current status
-- (`status_since`, as the workflow projects it) stands for the heartbeats after it until the
-- interval makes one due: once the workflow takes it, the workspace is online, and a second
-- one would only wait behind it. Those heartbeats are recorded in the ledger, where the
-- liveness rules read them, and the one due by the interval is deferred (answered at once).
-- A forward made before the status began (e.g. before a restart) does not count, nor one that
-- failed (giving its heartbeats back clears `forwarded_at`). Another signature is still urgent.
-- The bound: a runtime that does not register after a restart, whose old instance's heartbeat
-- was forwarded during the restart, comes online at the next due forward (the interval) instead
-- of at its first heartbeat.
CREATE OR REPLACE FUNCTION record_heartbeat(
  p_token_hash BYTEA,
  p_workspace_id TEXT,
  p_signature TEXT,
  p_degrades BOOLEAN,
  p_forward_every_ms INTEGER
)
RETURNS TABLE (outcome TEXT, forward BOOLEAN, beats INTEGER, urgent BOOLEAN)
LANGUAGE plpgsql AS $$
DECLARE
  v_status TEXT;
  v_status_since TIMESTAMPTZ;
  v_owner TEXT;
  v_row workspace_heartbeats%ROWTYPE;
  v_due BOOLEAN;
  v_forwarded_in_status BOOLEAN;
  v_urgent BOOLEAN;
  v_forward BOOLEAN;
BEGIN
  SELECT CASE WHEN w.removed_at IS NULL THEN w.status ELSE 'removed' END, w.status_since
    INTO v_status, v_status_since
    FROM workspaces w WHERE w.id = p_workspace_id;
  IF v_status IS NULL OR v_status = 'removed' THEN
    RETURN QUERY SELECT 'not-found'::TEXT, FALSE, 0, FALSE;
    RETURN;
  END IF;
  SELECT t.workspace_id INTO v_owner FROM workspace_tokens t
    WHERE t.token_hash = p_token_hash AND t.revoked_at IS NULL;
  IF v_owner IS DISTINCT FROM p_workspace_id THEN
    RETURN QUERY SELECT 'unauthorized'::TEXT, FALSE, 0, FALSE;
    RETURN;
  END IF;
  INSERT INTO workspace_heartbeats (workspace_id) VALUES (p_workspace_id) ON CONFLICT DO NOTHING;
  SELECT * INTO v_row FROM workspace_heartbeats h WHERE h.workspace_id = p_workspace_id FOR UPDATE;
  v_due := v_row.forwarded_at IS NULL
    OR v_row.forwarded_at <= now() - make_interval(secs => p_forward_every_ms / 1000.0);
  -- NULL (nothing forwarded, or it failed) is false.
  v_forwarded_in_status := COALESCE(v_row.forwarded_at >= v_status_since, FALSE);
  -- After a register a due forward compares with no signature: it is urgent only if it can
  -- change state, as any other is.
  v_urgent := (v_status NOT IN ('online', 'degraded') AND NOT v_forwarded_in_status)
    OR CASE WHEN v_row.signature = 'register' THEN p_degrades ELSE v_row.signature IS DISTINCT FROM p_signature END;
  v_forward := v_due OR v_urgent;
  UPDATE workspace_heartbeats SET
    last_seen_at = now(),
    pending      = CASE WHEN v_forward THEN 0 ELSE v_row.pending + 1 END,
    forwarded_at = CASE WHEN v_forward THEN now() ELSE v_row.forwarded_at END,
    signature    = CASE WHEN v_forward THEN p_signature ELSE v_row.signature END
  WHERE workspace_id = p_workspace_id;
  RETURN QUERY SELECT 'ok'::TEXT, v_forward, CASE WHEN v_forward THEN v_row.pending + 1 ELSE 0 END, v_urgent;
END $$;
