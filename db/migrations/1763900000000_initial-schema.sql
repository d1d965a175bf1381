-- Up Migration

-- Projection of each workspace's lifecycle state, written by the workflow on transitions for
-- SQL readers. Temporal is the source of truth for live state.
CREATE TABLE workspaces (
  id            TEXT PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
  status        TEXT NOT NULL DEFAULT 'provisioning'
                CHECK (status IN ('provisioning', 'online', 'degraded', 'offline', 'awaiting_agent', 'failed', 'removed')),
  url           TEXT,
  status_since  TIMESTAMPTZ NOT NULL DEFAULT now(),
  created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Desired state: the plugins a workspace's template declares.
CREATE TABLE declared_plugins (
  workspace_id  TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  plugin_name   TEXT NOT NULL CHECK (plugin_name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
  source        TEXT NOT NULL CHECK (source <> ''),
  created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (workspace_id, plugin_name)
);

-- Tracking rows: what is installed on the box, at which immutable revision, and how it got
-- there ('boot': the probe found it on the box; 'delivered': the reconcile delivered it).
CREATE TABLE installed_plugins (
  workspace_id  TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  plugin_name   TEXT NOT NULL CHECK (plugin_name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
  source        TEXT NOT NULL CHECK (source <> ''),
  revision      TEXT NOT NULL CHECK (revision <> ''),
  installed_via TEXT NOT NULL CHECK (installed_via IN ('boot', 'delivered')),
  installed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (workspace_id, plugin_name)
);
