# Sourced by the scripts that install what they use from Debian packages (the caller defines
# `log`). apt_install WHAT FALLBACK [APT-GET OPTION...] -- PACKAGE...: installs the packages with
# apt-get (through sudo when not root), or exits 1 saying what to do without apt-get or root.
apt_install() {
  local what="$1" fallback="$2"
  shift 2
  local options=()
  while [[ "$1" != "--" ]]; do options+=("$1"); shift; done
  shift
  command -v apt-get >/dev/null || { log "$what is missing and apt-get is unavailable: $fallback"; exit 1; }
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { log "$what is missing: run 'apt-get install $*' as root, or $fallback"; exit 1; }
    sudo="sudo"
  fi
  log "installing $what from Debian packages..."
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${options[@]}" "$@" >&2
}
