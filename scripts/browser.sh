#!/usr/bin/env bash
# Makes sure a headless Chromium is there for the Web UI test (test/e2e): $CHROMIUM_PATH, or
# Debian's chromium package, installed when missing. playwright-core drives it; nothing is
# downloaded from a browser vendor. Idempotent.
set -euo pipefail
log() { printf '[browser] %s\n' "$*" >&2; }

path="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [[ -x "$path" ]]; then exit 0; fi
if [[ -n "${CHROMIUM_PATH:-}" ]]; then log "CHROMIUM_PATH=$CHROMIUM_PATH is not an executable"; exit 1; fi
command -v apt-get >/dev/null || { log "Chromium is missing and apt-get is unavailable: install Chromium and set CHROMIUM_PATH"; exit 1; }
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { log "Chromium is missing: run 'apt-get install chromium' as root, or set CHROMIUM_PATH"; exit 1; }
  sudo="sudo"
fi
log "installing Chromium from Debian packages (about a minute)..."
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >&2
log "$("$path" --version)"
