#!/usr/bin/env bash
# Makes sure a headless Chromium is there for the Web UI test (test/e2e): $CHROMIUM_PATH, or
# Debian's chromium package, installed when missing. playwright-core drives it; nothing is
# downloaded from a browser vendor. Idempotent.
set -euo pipefail
log() { printf '[browser] %s\n' "$*" >&2; }

path="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [[ -x "$path" ]]; then exit 0; fi
if [[ -n "${CHROMIUM_PATH:-}" ]]; then log "CHROMIUM_PATH=$CHROMIUM_PATH is not an executable"; exit 1; fi
source "$(dirname "$0")/apt-install.sh"
apt_install Chromium "install Chromium and set CHROMIUM_PATH" -- chromium
log "$("$path" --version)"
