#!/usr/bin/env bash
# Provides the offline Temporal toolchain, cached outside the repository:
#   - the Temporal dev server (embedded Web UI and SQLite): scripts/dev-server/main.go built with
#     `go build` inside a download of the Temporal CLI's module, on the CLI's dev server package
#   - the Java time-skipping test server with its dependencies, fetched with `mvn`
#   - with --promtool, also promtool (`promtool check rules` for ops/prometheus/rules.yml), built
#     with `go install` from the Prometheus module: far longer than the rest, so only when asked
# Idempotent: a second run finds them in the cache and does nothing.
# With --print-env it prints `export` lines for the paths on stdout.
set -euo pipefail

# shellcheck source=toolchain.env
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.env"
# The CLI's own main package cannot be built from the module proxy: its go.mod replaces its
# `cliext` module with a folder module downloads leave out, and no proxy serves `cliext`
# (`go install` refuses a replace directive; `go build` finds no folder). Its dev server package
# needs nothing of `cliext`, so the requirement is dropped in a copy of the module and our main
# is built there (inside the module, so the package is not `internal` to us).
CLI_VERSION="$TEMPORAL_CLI_VERSION"
TEST_SERVER_VERSION="$TEMPORAL_TEST_SERVER_VERSION"
CACHE="${WL_TOOLCHAIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/workspace-lifecycle/toolchain}"

log() { printf '[toolchain] %s\n' "$*" >&2; }
need() {
  command -v "$1" >/dev/null 2>&1 || { log "missing '$1': $2"; exit 1; }
}

mkdir -p "$CACHE"

# --- Temporal dev server ----------------------------------------------------------------
cli_dir="$CACHE/temporal-cli-$CLI_VERSION"
cli="$cli_dir/temporal"
main="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/dev-server/main.go"
source_sum=$(sha256sum "$main" | cut -d' ' -f1)
if [[ -x "$cli" && "$(cat "$cli_dir/source.sha256" 2>/dev/null)" == "$source_sum" ]]; then
  log "temporal dev server (CLI $CLI_VERSION): cached at $cli"
else
  need go "install Go (https://go.dev/dl) to build the Temporal dev server"
  log "building the temporal dev server on CLI $CLI_VERSION with go build (about 5 min on 2 cores)..."
  start=$(date +%s)
  module=$(GOFLAGS=-mod=mod go mod download -json "github.com/temporalio/cli@$CLI_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [[ -d "$module" ]] || { log "could not download github.com/temporalio/cli@$CLI_VERSION"; exit 1; }
  build=$(mktemp -d)
  trap 'rm -rf "$build"' EXIT
  cp -r "$module" "$build/cli" && chmod -R u+w "$build/cli"
  mkdir -p "$build/cli/cmd/wl-dev-server" && cp "$main" "$build/cli/cmd/wl-dev-server/main.go"
  (
    cd "$build/cli"
    go mod edit -dropreplace=github.com/temporalio/cli/cliext -droprequire=github.com/temporalio/cli/cliext
    GOFLAGS=-mod=mod go build -trimpath -ldflags "-X main.cliVersion=$CLI_VERSION" -o "$build/temporal" ./cmd/wl-dev-server
  )
  mkdir -p "$cli_dir" && mv "$build/temporal" "$cli" && echo "$source_sum" >"$cli_dir/source.sha256"
  rm -rf "$build" && trap - EXIT
  log "temporal dev server built in $(( $(date +%s) - start ))s: $cli"
fi

# --- Java time-skipping test server -----------------------------------------------------
ts_dir="$CACHE/temporal-test-server-$TEST_SERVER_VERSION"
ts="$ts_dir/temporal-test-server"
if [[ -d "$ts_dir/lib" ]]; then
  log "temporal test server $TEST_SERVER_VERSION: cached at $ts_dir"
else
  need java "install a Java 17+ runtime to run the time-skipping test server"
  need mvn "install Maven to fetch the time-skipping test server"
  log "fetching io.temporal:temporal-test-server:$TEST_SERVER_VERSION and dependencies with mvn..."
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cat >"$tmp/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local</groupId><artifactId>toolchain</artifactId><version>0</version>
  <dependencies>
    <dependency>
      <groupId>io.temporal</groupId><artifactId>temporal-test-server</artifactId>
      <version>$TEST_SERVER_VERSION</version>
    </dependency>
  </dependencies>
</project>
POM
  rm -rf "$ts_dir/lib.tmp" && mkdir -p "$ts_dir/lib.tmp"
  mvn -q -B -f "$tmp/pom.xml" dependency:copy-dependencies -DoutputDirectory="$ts_dir/lib.tmp" -DincludeScope=runtime >&2
  mv "$ts_dir/lib.tmp" "$ts_dir/lib"
  log "temporal test server fetched: $ts_dir/lib ($(ls "$ts_dir/lib" | wc -l) jars)"
fi

# The SDK gives the test server a fixed 5 s to answer after it is spawned, and every workflow test
# file spawns one. A class-data archive of the classes it loads at start (made once, by starting
# it) lets the JVM map them instead of loading and verifying each jar's classes again.
# -Xshare:auto: a missing or stale archive only costs the speed, never the start.
jsa="$ts_dir/classes.jsa"
if [[ ! -f "$jsa" ]]; then
  log "making the test server's class-data archive..."
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  java -XX:ArchiveClassesAtExit="$jsa.tmp" -Xlog:cds=off -Xlog:cds+dynamic=off \
    -cp "$ts_dir/lib/*" io.temporal.testserver.TestServer "$port" >/dev/null 2>&1 &
  server=$!
  for _ in $(seq 1 600); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  if [[ -s "$jsa.tmp" ]]; then mv "$jsa.tmp" "$jsa"; else rm -f "$jsa.tmp"; log "no archive made; the test server starts without one"; fi
fi
if [[ ! -x "$ts" ]] || ! grep -q SharedArchiveFile "$ts"; then
  cat >"$ts.tmp" <<WRAP
#!/usr/bin/env bash
exec java -XX:SharedArchiveFile="$jsa" -Xshare:auto -Xlog:cds=off -cp "$ts_dir/lib/*" io.temporal.testserver.TestServer "\$@"
WRAP
  chmod +x "$ts.tmp" && mv "$ts.tmp" "$ts"
  log "temporal test server ready: $ts"
fi

# --- promtool (--promtool) --------------------------------------------------------------
pt_dir="$CACHE/promtool-$PROMTOOL_VERSION"
pt="$pt_dir/promtool"
if [[ -x "$pt" ]]; then
  log "promtool $PROMTOOL_VERSION: cached at $pt"
elif [[ " $* " == *" --promtool "* ]]; then
  need go "install Go (https://go.dev/dl) to build promtool"
  log "building promtool $PROMTOOL_VERSION with go install (the whole Prometheus module: long on 2 cores)..."
  start=$(date +%s)
  rm -rf "$pt_dir.tmp"
  GOBIN="$pt_dir.tmp" go install "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
  mkdir -p "$pt_dir" && mv "$pt_dir.tmp/promtool" "$pt" && rm -rf "$pt_dir.tmp"
  log "promtool built in $(( $(date +%s) - start ))s: $pt"
fi

if [[ " $* " == *" --print-env "* ]]; then
  echo "export TEMPORAL_CLI_PATH=$cli"
  echo "export TEMPORAL_TEST_SERVER_PATH=$ts"
  if [[ -x "$pt" ]]; then echo "export PROMTOOL_PATH=$pt"; fi
fi
