-- Up Migration

-- The outbox of status changes: every status transition a workspace's workflow makes, written in
-- the same statement as the projection write that reports it (record_status_changes below), and
-- streamed by the API's GET /events (api/routes/events.ts).
--   seq          the stream's position, gap-free and in commit order (workspace_event_sequence)
--   version      the projection version of the write that carried it; with step, the key that
--                makes a retried write insert nothing
--   step         the transition's place among those of one write (a box declared dead goes
--                offline, then provisioning for its restart, in one step of the workflow)
--   at           when the workflow made the transition (its clock); recorded_at: when it was written
-- Kept for WL_EVENTS_RETENTION_HOURS (the API deletes older rows; docs/events.md).
CREATE TABLE workspace_events (
  seq          BIGINT PRIMARY KEY,
  workspace_id TEXT NOT NULL,
  version      BIGINT NOT NULL,
  step         SMALLINT NOT NULL,
  from_status  TEXT NOT NULL,
  to_status    TEXT NOT NULL,
  cause        TEXT NOT NULL,
  at           TIMESTAMPTZ NOT NULL,
  recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, version, step)
);
CREATE INDEX workspace_events_workspace ON workspace_events (workspace_id, seq);
CREATE INDEX workspace_events_recorded ON workspace_events (recorded_at);

-- The last sequence number given, in one row. A writer holds that row's lock until it commits,
-- so events commit in sequence order with no number skipped: a reader that has seen N has seen
-- every event up to N. (A sequence object would skip numbers and commit out of order.)
CREATE TABLE workspace_event_sequence (
  singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
  last_seq  BIGINT NOT NULL
);
INSERT INTO workspace_event_sequence (last_seq) VALUES (0);

-- The events of one projection write's transitions (p_transitions: a JSON array of
-- {from, to, cause, at}), called by the statement that writes the projection
-- (db/tables/workspaces.ts), so both commit together. A retried write finds its events by
-- (workspace, version) and adds none; a late write of an older version still adds its events,
-- after newer ones (each carries its version). Returns how many events it added.
CREATE FUNCTION record_status_changes(
  p_workspace_id TEXT,
  p_version BIGINT,
  p_transitions JSONB
)
RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
  v_count INTEGER := COALESCE(jsonb_array_length(p_transitions), 0);
  v_last BIGINT;
BEGIN
  IF v_count = 0 THEN
    RETURN 0;
  END IF;
  SELECT last_seq INTO v_last FROM workspace_event_sequence FOR UPDATE;
  IF EXISTS (SELECT 1 FROM workspace_events e WHERE e.workspace_id = p_workspace_id AND e.version = p_version) THEN
    RETURN 0;
  END IF;
  INSERT INTO workspace_events (seq, workspace_id, version, step, from_status, to_status, cause, at)
  SELECT v_last + t.n, p_workspace_id, p_version, t.n - 1, t.item->>'from', t.item->>'to',
         left(t.item->>'cause', 500), (t.item->>'at')::timestamptz
  FROM jsonb_array_elements(p_transitions) WITH ORDINALITY AS t (item, n);
  UPDATE workspace_event_sequence SET last_seq = v_last + v_count;
  RETURN v_count;
END $$;
