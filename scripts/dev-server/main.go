// The Temporal dev server, built by scripts/toolchain.sh from the Temporal CLI's module at the
// version in scripts/toolchain.env. It serves `temporal server start-dev` with the flags this
// project and the SDK's test environment pass, on the CLI's own dev server package.
//
// Why not the CLI itself: the CLI's module requires its `cliext` module through a replace
// directive to a folder that module downloads leave out, and no module proxy serves `cliext`, so
// neither `go install` nor `go build` of the CLI's main package works from the module proxy. The
// dev server package needs nothing of `cliext`. This program is built inside a copy of the CLI's
// module (so that package is not `internal` to it) with that one requirement dropped.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/google/uuid"
	"go.temporal.io/api/enums/v1"

	"github.com/temporalio/cli/internal/devserver"
)

// The CLI's defaults for a dev server, applied unless a flag sets the key.
var defaultDynamicConfig = map[string]any{
	"system.forceSearchAttributesCacheRefreshOnRead": true,
	"system.forceNexusEndpointRefreshOnRead":         true,
	"frontend.persistenceMaxQPS":                     10000,
	"history.persistenceMaxQPS":                      45000,
}

// repeated is a flag given any number of times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "temporal: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-v" || args[0] == "version") {
		fmt.Println(version())
		return nil
	}
	if len(args) < 2 || args[0] != "server" || args[1] != "start-dev" {
		return errors.New("only `server start-dev [flags]` is served (a dev server built for workspace-lifecycle)")
	}
	fs := flag.NewFlagSet("start-dev", flag.ContinueOnError)
	var namespaces, pragmas, dynamic, searchAttributes repeated
	dbFile := fs.String("db-filename", "", "SQLite file for persistent state; in memory when empty")
	fs.Var(&namespaces, "namespace", "namespace to create besides default (repeatable)")
	port := fs.Int("port", 7233, "front-end gRPC port")
	httpPort := fs.Int("http-port", 0, "HTTP API port; a free one when 0")
	metricsPort := fs.Int("metrics-port", 0, "/metrics port; a free one when 0")
	uiPort := fs.Int("ui-port", 0, "Web UI port; --port + 1000 when 0")
	headless := fs.Bool("headless", false, "no Web UI")
	ip := fs.String("ip", "127.0.0.1", "IP the front end binds")
	uiIP := fs.String("ui-ip", "", "IP the Web UI binds; --ip when empty")
	logLevel := fs.String("log-level", "warn", "debug, info, warn, error or never")
	logFormat := fs.String("log-format", "text", "text (also: pretty) or json")
	fs.Var(&pragmas, "sqlite-pragma", "SQLite pragma as NAME=VALUE (repeatable)")
	fs.Var(&dynamic, "dynamic-config-value", "dynamic config as KEY=JSON (repeatable)")
	fs.Var(&searchAttributes, "search-attribute", "search attribute as NAME=TYPE (repeatable)")
	if err := fs.Parse(args[2:]); err != nil {
		return err
	}
	if *ip == "localhost" {
		*ip = "127.0.0.1"
	}

	level := slog.LevelWarn
	if *logLevel == "never" {
		level = 100
	} else if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("invalid --log-level %q: %w", *logLevel, err)
	}
	handlerOptions := &slog.HandlerOptions{Level: level}
	var handler slog.Handler = slog.NewTextHandler(os.Stderr, handlerOptions)
	if *logFormat == "json" {
		handler = slog.NewJSONHandler(os.Stderr, handlerOptions)
	}

	opts := devserver.StartOptions{
		FrontendIP:             *ip,
		FrontendPort:           *port,
		Namespaces:             append([]string{"default"}, namespaces...),
		Logger:                 slog.New(handler),
		LogLevel:               level,
		DatabaseFile:           *dbFile,
		MetricsPort:            *metricsPort,
		FrontendHTTPPort:       *httpPort,
		ClusterID:              uuid.NewString(),
		MasterClusterName:      "active",
		CurrentClusterName:     "active",
		InitialFailoverVersion: 1,
	}
	for _, p := range []int{opts.FrontendPort, opts.FrontendHTTPPort, opts.MetricsPort} {
		if p == 0 {
			continue
		}
		if err := devserver.CheckPortFree(opts.FrontendIP, p); err != nil {
			return fmt.Errorf("port %d: %w", p, err)
		}
	}
	if opts.MetricsPort == 0 {
		opts.MetricsPort = devserver.MustGetFreePort(opts.FrontendIP)
	}
	if !*headless {
		opts.UIIP, opts.UIPort = *uiIP, *uiPort
		if opts.UIIP == "" {
			opts.UIIP = *ip
		}
		if opts.UIPort == 0 {
			opts.UIPort = min(*port+1000, 65535)
		}
		if err := devserver.CheckPortFree(opts.UIIP, opts.UIPort); err != nil {
			return fmt.Errorf("UI port %d: %w", opts.UIPort, err)
		}
	}

	var err error
	if opts.SqlitePragmas, err = keyValues(pragmas); err != nil {
		return fmt.Errorf("invalid --sqlite-pragma: %w", err)
	}
	if opts.DynamicConfigValues, err = dynamicConfig(dynamic); err != nil {
		return fmt.Errorf("invalid --dynamic-config-value: %w", err)
	}
	if opts.SearchAttributes, err = searchAttributeTypes(searchAttributes); err != nil {
		return fmt.Errorf("invalid --search-attribute: %w", err)
	}

	server, err := devserver.Start(opts)
	if err != nil {
		return fmt.Errorf("failed starting server: %w", err)
	}
	fmt.Printf("%s at %s:%d, metrics at http://%s:%d/metrics\n",
		version(), opts.FrontendIP, opts.FrontendPort, opts.FrontendIP, opts.MetricsPort)
	if opts.UIIP != "" {
		fmt.Printf("Temporal UI at http://%s:%d\n", opts.UIIP, opts.UIPort)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	server.SuppressWarnings()
	server.Stop()
	return nil
}

func keyValues(pairs []string) (map[string]string, error) {
	values := make(map[string]string, len(pairs))
	for _, pair := range pairs {
		key, value, ok := strings.Cut(pair, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("%q is not KEY=VALUE", pair)
		}
		values[key] = value
	}
	return values, nil
}

// dynamicConfig parses KEY=JSON pairs; whole numbers become int, the type the server's dynamic
// config reads integers as.
func dynamicConfig(pairs []string) (map[string]any, error) {
	raw, err := keyValues(pairs)
	if err != nil {
		return nil, err
	}
	values := make(map[string]any, len(raw)+len(defaultDynamicConfig))
	for key, text := range raw {
		decoder := json.NewDecoder(strings.NewReader(text))
		decoder.UseNumber()
		var value any
		if err := decoder.Decode(&value); err != nil {
			return nil, fmt.Errorf("%s: %q is not JSON: %w", key, text, err)
		}
		if number, ok := value.(json.Number); ok {
			if whole, err := number.Int64(); err == nil {
				value = int(whole)
			} else if real, err := number.Float64(); err == nil {
				value = real
			}
		}
		values[key] = value
	}
	for key, value := range defaultDynamicConfig {
		if _, set := values[key]; !set {
			values[key] = value
		}
	}
	return values, nil
}

func searchAttributeTypes(pairs []string) (map[string]enums.IndexedValueType, error) {
	raw, err := keyValues(pairs)
	if err != nil {
		return nil, err
	}
	types := make(map[string]enums.IndexedValueType, len(raw))
	for name, typeName := range raw {
		for shorthand, value := range enums.IndexedValueType_shorthandValue {
			if strings.EqualFold(typeName, shorthand) {
				types[name] = enums.IndexedValueType(value)
			}
		}
		if types[name] == 0 {
			return nil, fmt.Errorf("%s: unknown type %q (Text, Keyword, Int, Double, Bool, Datetime, KeywordList)", name, typeName)
		}
	}
	return types, nil
}

// version is set with -ldflags "-X main.cliVersion=..." by scripts/toolchain.sh.
var cliVersion = "unknown"

func version() string {
	return "Temporal dev server (workspace-lifecycle, on the Temporal CLI " + cliVersion + ")"
}
