#!/usr/bin/env bash
# Runs a command on jemalloc: `bash scripts/jemalloc.sh COMMAND [ARG...]` execs COMMAND with
# Debian's libjemalloc2 preloaded (LD_PRELOAD), installing the package first when it is missing.
# Without arguments it only makes sure the library is there.
#
# Why: the worker keeps thousands of workflows cached, and the SDK's native side allocates and
# frees many small blocks for them; the C library's malloc leaves those arenas fragmented
# (`npm run bench:cache-memory` compares the two; docs/performance.md has the figures).
#
# WL_ALLOCATOR=system runs COMMAND on the C library's malloc. Where jemalloc cannot be installed
# (no apt-get, no root), it says so and runs COMMAND anyway. exec keeps COMMAND's pid.
set -euo pipefail
log() { printf '[jemalloc] %s\n' "$*" >&2; }

find_jemalloc() {
  local candidate
  for candidate in /usr/lib/*-linux-gnu/libjemalloc.so.2 /usr/lib/libjemalloc.so.2 /usr/local/lib/libjemalloc.so.2; do
    [[ -e "$candidate" ]] && { printf '%s\n' "$candidate"; return 0; }
  done
  return 1
}

library=""
if [[ "${WL_ALLOCATOR:-jemalloc}" != "system" && "$(uname -s)" == "Linux" ]]; then
  if ! library="$(find_jemalloc)"; then
    # A subshell: apt_install exits when it cannot install, and the command still runs.
    if (
      source "$(dirname "$0")/apt-install.sh"
      apt_install "jemalloc" "install libjemalloc2 for a smaller worker, or set WL_ALLOCATOR=system" -- libjemalloc2
    ); then
      library="$(find_jemalloc || true)"
    fi
    [[ -n "$library" ]] || log "not installed: running on the C library's malloc (the worker needs more memory per cached workflow)"
  fi
fi

if [[ $# -eq 0 ]]; then exit 0; fi
if [[ -n "$library" ]]; then
  export LD_PRELOAD="${library}${LD_PRELOAD:+:$LD_PRELOAD}"
fi
exec "$@"
