-- Up Migration

-- The one-time boot credential a box's runtime registers with while its workspace has no live
-- instance token (after a dead verdict revoked them). The restart writes it into the box and
-- stores only its SHA-256 here; a new one replaces the old, and the register it lets through
-- deletes it.
CREATE TABLE workspace_boot_credentials (
  workspace_id     TEXT PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
  credential_hash  BYTEA NOT NULL,
  created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
