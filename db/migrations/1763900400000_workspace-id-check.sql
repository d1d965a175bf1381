-- Up Migration

-- Workspace ids are safe folder names: 1-128 letters, digits, '.', '_' or '-', starting with a
-- letter or digit, as the API and the payloads already require (':' was allowed here alone).
-- NOT VALID: rows written before keep their ids; every new one is checked.
ALTER TABLE workspaces DROP CONSTRAINT workspaces_id_check;
ALTER TABLE workspaces ADD CONSTRAINT workspaces_id_check CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$') NOT VALID;
