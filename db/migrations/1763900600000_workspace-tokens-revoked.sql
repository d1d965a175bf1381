-- Up Migration

-- Revoked tokens are kept for a retention period (who held access, and until when), then deleted:
-- this index finds the ones past it without reading the live ones.
CREATE INDEX workspace_tokens_revoked ON workspace_tokens (revoked_at) WHERE revoked_at IS NOT NULL;
