-- Up Migration

-- Instance tokens a workspace's runtime authenticates with. Only a SHA-256 of the token is
-- stored. Dead detection revokes the live ones; the next register mints a new one.
CREATE TABLE workspace_tokens (
  id            BIGSERIAL PRIMARY KEY,
  workspace_id  TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  token_hash    BYTEA NOT NULL UNIQUE,
  prefix        TEXT NOT NULL,
  created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  last_used_at  TIMESTAMPTZ,
  revoked_at    TIMESTAMPTZ
);
CREATE INDEX workspace_tokens_live ON workspace_tokens (workspace_id) WHERE revoked_at IS NULL;
