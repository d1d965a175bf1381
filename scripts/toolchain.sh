#!/usr/bin/env bash
# Provides the offline Temporal toolchain, cached outside the repository:
#   - the Temporal dev server (embedded Web UI and SQLite): scripts/dev-server/main.go built with
#     `go build` inside a download of the Temporal CLI's module, on the CLI's dev server package
#   - the Java time-skipping test server with its dependencies, fetched with `mvn`
#   - with --promtool, also promtool (`promtool check rules` for ops/prometheus/rules.yml), built
#     with `go install` from the Prometheus module: far longer than the rest, so only when asked
#   - kubeconform (the Kubernetes manifest validator of the tests) and the Kubernetes OpenAPI
#     document it validates deploy/k8s/ against, both from the Go module proxy
# With --cluster it also builds the production shape's pieces (`npm run start:cluster`), from the
# Go module proxy at the versions the CLI's go.mod pins: the Temporal server (cmd/server), its SQL
# schema tool (temporal-sql-tool, with the server's PostgreSQL schemas) and the Web UI server.
# Idempotent: a second run finds everything in the cache and does nothing.
# With --print-env it prints `export` lines for the paths on stdout (both flags may be given).
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
# A test server lives for one test file and runs little code: the client compiler alone and one
# GC thread cost it about half the CPU of the JVM's defaults, and a test run starts a dozen.
jvm_flags='-XX:TieredStopAtLevel=1 -XX:CICompilerCount=1 -XX:+UseSerialGC'
if [[ ! -x "$ts" ]] || ! grep -qF -- "$jvm_flags" "$ts"; then
  cat >"$ts.tmp" <<WRAP
#!/usr/bin/env bash
exec java -XX:SharedArchiveFile="$jsa" -Xshare:auto -Xlog:cds=off $jvm_flags -cp "$ts_dir/lib/*" io.temporal.testserver.TestServer "\$@"
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

# --- kubeconform and the Kubernetes OpenAPI document ----------------------------------------
# The tests validate deploy/k8s/ offline: kubeconform against JSON schemas made from the OpenAPI
# document (api/openapi-spec/swagger.json) of the Kubernetes module at K8S_API_VERSION.
kc_dir="$CACHE/kubeconform-$KUBECONFORM_VERSION"
kubeconform="$kc_dir/kubeconform"
if [[ -x "$kubeconform" ]]; then
  log "kubeconform $KUBECONFORM_VERSION: cached at $kubeconform"
else
  need go "install Go (https://go.dev/dl) to build kubeconform"
  log "building kubeconform $KUBECONFORM_VERSION with go install..."
  mkdir -p "$kc_dir"
  GOBIN="$kc_dir" go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
fi
k8s_openapi="$CACHE/kubernetes-openapi-$K8S_API_VERSION.json"
if [[ ! -s "$k8s_openapi" ]]; then
  need go "install Go (https://go.dev/dl) to download the Kubernetes OpenAPI document"
  log "downloading k8s.io/kubernetes@$K8S_API_VERSION for its OpenAPI document..."
  k8s_module=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_API_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [[ -f "$k8s_module/api/openapi-spec/swagger.json" ]] || { log "no api/openapi-spec/swagger.json in k8s.io/kubernetes@$K8S_API_VERSION"; exit 1; }
  cp "$k8s_module/api/openapi-spec/swagger.json" "$k8s_openapi.tmp" && chmod u+w "$k8s_openapi.tmp" && mv "$k8s_openapi.tmp" "$k8s_openapi"
fi

# --- the production shape (--cluster) ------------------------------------------------------
# Versions from the CLI's go.mod, so the cluster runs the server the dev server embeds.
cluster=false
for arg in "$@"; do [[ "$arg" == "--cluster" ]] && cluster=true; done
# Peak memory is the largest single process of the build (the compiler or the linker), from
# GNU time; the figures land in build.txt beside the binaries.
timed_build() {
  local out="$1"; shift
  local report
  report=$(mktemp)
  local start; start=$(date +%s)
  if command -v /usr/bin/time >/dev/null && /usr/bin/time -f '%M' true >/dev/null 2>&1; then
    nice -n 10 /usr/bin/time -o "$report" -f '%M' "$@"
  else
    nice -n 10 "$@"
  fi
  local seconds=$(( $(date +%s) - start ))
  local peak_kb; peak_kb=$(tail -1 "$report" 2>/dev/null || echo 0)
  rm -f "$report"
  echo "build ${seconds}s, peak memory $(( ${peak_kb:-0} / 1024 )) MB ($(date -u +%F) on $(nproc) cores)" >"$out"
  log "$(cat "$out")"
}
if $cluster; then
  need go "install Go (https://go.dev/dl) to build the Temporal server"
  cli_module=$(GOFLAGS=-mod=mod go mod download -json "github.com/temporalio/cli@$CLI_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  server_version=$(awk '$1 == "go.temporal.io/server" { print $2 }' "$cli_module/go.mod")
  ui_version=$(awk '$1 == "github.com/temporalio/ui-server/v2" { print $2 }' "$cli_module/go.mod")
  [[ -n "$server_version" && -n "$ui_version" ]] || { log "the CLI's go.mod names no server or ui-server version"; exit 1; }
  server_dir="$CACHE/temporal-server-$server_version"
  ui_dir="$CACHE/temporal-ui-server-$ui_version"
  if [[ -x "$server_dir/temporal-server" && -x "$server_dir/temporal-sql-tool" && -d "$server_dir/schema/postgresql" ]]; then
    log "temporal server $server_version: cached at $server_dir"
  else
    # Built as dependencies of the CLI's module (the copy the dev server is built in, cliext
    # dropped), so they get the CLI's dependency versions and reuse its build cache: the dev
    # server's build has compiled nearly every package they need.
    log "building temporal server $server_version and temporal-sql-tool with go build..."
    module=$(GOFLAGS=-mod=mod go mod download -json "go.temporal.io/server@$server_version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    [[ -d "$module/schema/postgresql" ]] || { log "could not download go.temporal.io/server@$server_version"; exit 1; }
    rm -rf "$server_dir.tmp" && mkdir -p "$server_dir.tmp"
    cp -r "$cli_module" "$server_dir.tmp/cli" && chmod -R u+w "$server_dir.tmp/cli"
    (
      cd "$server_dir.tmp/cli"
      go mod edit -dropreplace=github.com/temporalio/cli/cliext -droprequire=github.com/temporalio/cli/cliext
      GOFLAGS=-mod=mod timed_build "$server_dir.tmp/build.txt" go build -trimpath -o "$server_dir.tmp/" \
        go.temporal.io/server/cmd/server go.temporal.io/server/cmd/tools/sql
    )
    mv "$server_dir.tmp/server" "$server_dir.tmp/temporal-server" && mv "$server_dir.tmp/sql" "$server_dir.tmp/temporal-sql-tool"
    cp -r "$module/schema" "$server_dir.tmp/schema" && chmod -R u+w "$server_dir.tmp/schema"
    if [[ ! -x "$ui_dir/ui-server" ]]; then
      log "building temporal ui-server $ui_version with go build..."
      mkdir -p "$ui_dir"
      (
        cd "$server_dir.tmp/cli"
        GOFLAGS=-mod=mod timed_build "$ui_dir/build.txt" go build -trimpath -o "$ui_dir/ui-server.tmp" \
          github.com/temporalio/ui-server/v2/cmd/server
      )
      mv "$ui_dir/ui-server.tmp" "$ui_dir/ui-server"
    fi
    rm -rf "$server_dir.tmp/cli" "$server_dir" && mv "$server_dir.tmp" "$server_dir"
  fi
  [[ -x "$ui_dir/ui-server" ]] || { log "no ui-server in $ui_dir: remove $server_dir and run again"; exit 1; }
fi

for arg in "$@"; do
  [[ "$arg" == "--print-env" ]] || continue
  echo "export TEMPORAL_CLI_PATH=$cli"
  echo "export TEMPORAL_TEST_SERVER_PATH=$ts"
  echo "export WL_KUBECONFORM_PATH=$kubeconform"
  echo "export WL_KUBERNETES_OPENAPI=$k8s_openapi"
  if [[ -x "$pt" ]]; then echo "export PROMTOOL_PATH=$pt"; fi
  if $cluster; then
    echo "export WL_TEMPORAL_SERVER_DIR=$server_dir"
    echo "export WL_TEMPORAL_UI_SERVER_PATH=$ui_dir/ui-server"
  fi
done
