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

command -v apt-get >/dev/null || { log "${missing[*]} missing and apt-get is unavailable: install OpenSSH (client and server) and retry"; exit 1; }
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { log "${missing[*]} missing: run 'apt-get install ${missing[*]}' as root"; exit 1; }
  sudo="sudo"
fi
log "installing ${missing[*]} from Debian packages..."
$sudo apt-get update -qq >&2
# On a machine with a service manager the package also enables the system's own sshd service;
# the tests never use it (they start their own sshd on a free loopback port).
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
log "$(ssh -V 2>&1)"
