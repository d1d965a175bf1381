#!/usr/bin/env bash
# Makes sure OpenSSH's client (the SSH box driver runs `ssh`) and server (the driver's test runs
# its own `sshd` on a loopback port) are there: installed from Debian's openssh-client and
# openssh-server packages when missing. Starts nothing and downloads nothing else. Idempotent:
# when both are installed it is only `command -v` checks.
set -euo pipefail
log() { printf '[sshd] %s\n' "$*" >&2; }

missing=()
command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
# sshd lives in /usr/sbin, which a non-root PATH may lack.
command -v sshd >/dev/null 2>&1 || [[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
if [[ ${#missing[@]} -eq 0 ]]; then exit 0; fi

# On a machine with a service manager the server package also enables the system's own sshd
# service; the tests never use it (they start their own sshd on a free loopback port).
source "$(dirname "$0")/apt-install.sh"
apt_install "${missing[*]}" "install OpenSSH (client and server) and retry" --no-install-recommends -- "${missing[@]}"
log "$(ssh -V 2>&1)"
