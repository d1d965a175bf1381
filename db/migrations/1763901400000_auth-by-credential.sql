-- Up Migration

-- A runtime call is authenticated from its credentials alone, before anything about the
-- workspace it names is read (api/tokens.ts): each credential is looked up by its own hash, so
-- neither the answer to a call without a valid one nor its time depends on whether the id exists.

-- Boot credentials are found by their hash, as tokens are.
CREATE INDEX workspace_boot_credentials_hash ON workspace_boot_credentials (credential_hash);

-- The heartbeat's one round trip checks the token before it reads the workspace: a token that is
-- not a live one of this workspace is 'unauthorized' whether or not the workspace exists. A
-- heartbeat with a live token of its workspace makes the same two lookups as before.
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
  SELECT t.workspace_id INTO v_owner FROM workspace_tokens t
    WHERE t.token_hash = p_token_hash AND t.revoked_at IS NULL;
  IF v_owner IS DISTINCT FROM p_workspace_id THEN
    RETURN QUERY SELECT 'unauthorized'::TEXT, FALSE, 0, FALSE;
    RETURN;
  END IF;
  SELECT CASE WHEN w.removed_at IS NULL THEN w.status ELSE 'removed' END, w.status_since
    INTO v_status, v_status_since
    FROM workspaces w WHERE w.id = p_workspace_id;
  IF v_status IS NULL OR v_status = 'removed' THEN
    RETURN QUERY SELECT 'not-found'::TEXT, FALSE, 0, FALSE;
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
