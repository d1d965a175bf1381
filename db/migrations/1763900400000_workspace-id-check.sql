-- Up Migration

-- Workspace ids are safe folder names: 1-128 letters, digits, '.', '_' or '-', starting with a
-- letter or digit, as the API and the payloads already require (':' was allowed here alone).
-- NOT VALID: rows written before are not checked now, but an UPDATE of one is; a row with ':'
-- (none could be created through the API) must be renamed or deleted before it can change.
ALTER TABLE workspaces DROP CONSTRAINT workspaces_id_check;
ALTER TABLE workspaces ADD CONSTRAINT workspaces_id_check CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$') NOT VALID;
