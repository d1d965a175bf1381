#!/usr/bin/env bash
# Makes sure nginx is there (the load balancer `npm run start:cluster` puts in front of its APIs):
# installed from Debian's nginx-light package when missing. Starts nothing: the cluster shape
# runs its own nginx with a configuration it writes (scripts/cluster.ts), never the system's
# service. Idempotent: when nginx is installed it is one `command -v` check.
# Prints the path of the nginx binary on stdout.
set -euo pipefail
log() { printf '[nginx] %s\n' "$*" >&2; }

find_nginx() { command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true; }
bin=$(find_nginx)
if [[ -z "$bin" ]]; then
  # On a machine with a service manager the package also enables the system's nginx service on
  # port 80; the cluster shape never uses it.
  source "$(dirname "$0")/apt-install.sh"
  apt_install nginx "install nginx and retry" --no-install-recommends -- nginx-light
  bin=$(find_nginx)
  [[ -n "$bin" ]] || { log "nginx was installed but is not on PATH nor in /usr/sbin"; exit 1; }
  log "$("$bin" -v 2>&1)"
fi
echo "$bin"
