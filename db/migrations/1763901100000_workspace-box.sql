-- Up Migration

-- How the worker reaches the workspace's box, when it is not the worker's default (local) driver:
-- e.g. {"driver": "ssh", "host": ..., "port": 22, "user": ..., "keyRef": ..., "hostKey": ...,
-- "root": ..., "restartCommand": ..., "runningCommand": ...}. NULL: the default driver.
-- No secret is stored here: keyRef names a key file in the worker's key directory.
ALTER TABLE workspaces ADD COLUMN box JSONB;
