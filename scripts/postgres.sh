#!/usr/bin/env bash
# Starts a local PostgreSQL cluster for the tests (installing PostgreSQL from the system's
# package manager when it is missing) and creates the test database. Idempotent: a running
# cluster is reused. Prints `export DATABASE_URL=...` on stdout.
# `postgres.sh stop` stops the cluster (fast shutdown: clients are disconnected), as a
# database restart does; the next `postgres.sh` starts it again.
# WL_PG_FSYNC=on starts a cluster that syncs its commits to disk (the production shape,
# `npm run start:cluster`); the test clusters run with fsync off, which only a crash of the
# machine itself would make them regret. WL_PG_MAX_CONNECTIONS: the cluster's connection limit
# (PostgreSQL's default, 100, unless set).
set -euo pipefail

PORT="${WL_PG_PORT:-55432}"
DB="${WL_PG_DATABASE:-workspace_lifecycle_test}"
# Outside $HOME: the postgres system user must be able to reach it when we run as root.
DIR="${WL_PG_DIR:-/var/tmp/workspace-lifecycle/postgres}"
FSYNC="${WL_PG_FSYNC:-off}"
MAX_CONNECTIONS="${WL_PG_MAX_CONNECTIONS:-100}"
[[ "$FSYNC" == on || "$FSYNC" == off ]] || { printf '[postgres] WL_PG_FSYNC must be on or off, got %s\n' "$FSYNC" >&2; exit 1; }
log() { printf '[postgres] %s\n' "$*" >&2; }

bindir=""
for candidate in "$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)")" /usr/lib/postgresql/*/bin; do
  if [[ -x "$candidate/pg_ctl" && -x "$candidate/initdb" ]]; then bindir="$candidate"; break; fi
done
if [[ -z "$bindir" ]]; then
  command -v apt-get >/dev/null || { log "PostgreSQL is missing and apt-get is unavailable: install PostgreSQL 15+ and retry"; exit 1; }
  log "installing PostgreSQL from Debian packages..."
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

# PostgreSQL refuses to run as root: run the cluster as the `postgres` system user then.
as_owner() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then useradd --system --no-create-home postgres; fi

if [[ "${1:-}" == "stop" ]]; then
  log "stopping cluster on port $PORT"
  as_owner "$bindir/pg_ctl" -D "$DIR/data" -m fast -w stop >&2
  exit 0
fi

psql=$(command -v psql || echo "$bindir/psql")
mkdir -p "$DIR"
[[ $(id -u) -eq 0 ]] && chown postgres "$DIR"
if [[ ! -f "$DIR/data/PG_VERSION" ]]; then
  log "initdb in $DIR/data"
  as_owner "$bindir/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
fi
if as_owner "$bindir/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
  log "cluster already running on port $PORT"
else
  log "starting cluster on port $PORT"
  as_owner "$bindir/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
    -o "-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c fsync=$FSYNC -c max_connections=$MAX_CONNECTIONS" start >&2
fi
if ! "$psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DB'" | grep -q 1; then
  "$psql" -h 127.0.0.1 -p "$PORT" -U postgres -qc "CREATE DATABASE $DB" >&2
  log "created database $DB"
fi
echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$PORT/$DB"
