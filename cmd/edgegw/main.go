// Command edgegw is the edge gateway service.
//
//	edgegw run --config /etc/edgegw/edgegw.yaml
//	edgegw config check --config /etc/edgegw/edgegw.yaml
//	edgegw buffer stats --config /etc/edgegw/edgegw.yaml   (or --path buffer.db)
//	edgegw buffer dead-letters --config /etc/edgegw/edgegw.yaml [--export FILE] [--drop]
//	edgegw mqtt user add|passwd|remove|list [NAME] [--users-file FILE]
//	edgegw health [--addr 127.0.0.1:9180] [--live]
//	edgegw fleet set|unset|status|call ...   (docs/fleet.md)
//	edgegw version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

const usage = `usage:
  edgegw run [--config FILE] [--log-format text|json] [--log-level LEVEL]
  edgegw config check [--config FILE] [--connect]
  edgegw buffer stats [--config FILE | --path BUFFER_FILE]
  edgegw buffer dead-letters [--config FILE | --path BUFFER_FILE] [--export FILE] [--drop]
  edgegw sensors read [--config FILE]
  edgegw i2c scan [--bus 1]
  edgegw modbus read --url URL [--unit 1] [--table holding] [--address 0] [--type uint16] [--count 1]
  edgegw mqtt user add|passwd|remove|list [NAME] [--users-file FILE]   (the embedded broker's users)
  edgegw mqtt hash-password [--password-file FILE]   (else the password on stdin)
  edgegw health [--config FILE | --addr 127.0.0.1:9180] [--live]
  edgegw status [--config FILE | --addr 127.0.0.1:9180] [--user NAME] [--watch [--every 2s]]
  edgegw fleet set <gateway id|defaults> FILE [--base LOCAL_CONFIG]
  edgegw fleet unset <gateway id|defaults>
  edgegw fleet status [--json]
  edgegw fleet call <gateway id> <endpoint> [JSON]   (fleet: --server URL, --creds FILE)
  edgegw version

--config defaults to /etc/edgegw/edgegw.yaml; the commands that read it also read the
config's ${VAR}s from --env-file (default /etc/edgegw/edgegw.env, as the unit's
EnvironmentFile=; skipped when absent). edgegw COMMAND --help lists a command's flags.
Docs: docs/quickstart.md, docs/config.md, docs/operations.md.
`

// defaultConfig is where the packaged service keeps its config, and
// defaultEnvFile its secrets (the unit's EnvironmentFile=).
const (
	defaultConfig  = "/etc/edgegw/edgegw.yaml"
	defaultEnvFile = "/etc/edgegw/edgegw.env"
)

// shutdownLimit bounds a graceful stop: stop ingest, flush, wait for the
// upstream's acks (5s), close the buffer.
const shutdownLimit = 30 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch {
	case args[0] == "run":
		return cmdRun(args[1:], stderr)
	case args[0] == "config" && len(args) > 1 && args[1] == "check":
		return cmdConfigCheck(args[2:], stdout, stderr)
	case args[0] == "buffer" && len(args) > 1 && args[1] == "stats":
		return cmdBufferStats(args[2:], stdout, stderr)
	case args[0] == "buffer" && len(args) > 1 && args[1] == "dead-letters":
		return cmdDeadLetters(args[2:], stdout, stderr)
	case args[0] == "i2c" && len(args) > 1 && args[1] == "scan":
		return cmdI2CScan(args[2:], stdout, stderr)
	case args[0] == "modbus" && len(args) > 1 && args[1] == "read":
		return cmdModbusRead(args[2:], stdout, stderr)
	case args[0] == "sensors" && len(args) > 1 && args[1] == "read":
		return cmdSensorsRead(args[2:], stdout, stderr)
	case args[0] == "mqtt" && len(args) > 1 && args[1] == "user":
		return cmdMQTTUser(args[2:], os.Stdin, stdout, stderr)
	case args[0] == "mqtt" && len(args) > 1 && args[1] == "hash-password":
		return cmdHashPassword(args[2:], os.Stdin, stdout, stderr)
	case args[0] == "status":
		return cmdStatus(args[1:], stdout, stderr)
	case args[0] == "fleet":
		return cmdFleet(args[1:], os.Stdin, stdout, stderr)
	case args[0] == "health":
		return cmdHealth(args[1:], stdout, stderr)
	case args[0] == "version" || args[0] == "--version":
		fmt.Fprintln(stdout, "edgegw", versionString())
		return 0
	case args[0] == "help" || args[0] == "-h" || args[0] == "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "edgegw: unknown command %q\n%s", args[0], usage)
	return 2
}

// defaultMemoryLimit is the Go runtime's soft memory limit for edgegw run
// unless GOMEMLIMIT says otherwise: the collector works harder as the
// heap nears it, so a burst (a flood of large messages, a sessions file
// loading) does not take the process far past what it holds live. Soft:
// past it the process slows down, it does not fail. docs/mqtt-server.md
// (limits) has the measurements.
const defaultMemoryLimit = 32 << 20

func memoryLimit() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := flags("run", stderr)
	cf := addConfigFlags(fs, defaultConfig)
	cfgPath := cf.config
	format := fs.String("log-format", "", "text or json (overrides log.format)")
	level := fs.String("log-level", "", "debug, info, warn or error (overrides log.level)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := cf.load(false)
	if err == nil {
		err = cfg.CheckFiles()
	}
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	if *format != "" {
		cfg.Log.Format = *format
	}
	if *level != "" {
		cfg.Log.Level = *level
	}
	log, err := newLogger(stderr, cfg.Log)
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 2
	}
	memoryLimit()
	log.Info("starting", "version", versionString(), "config", *cfgPath, "go_memory_limit", debug.SetMemoryLimit(-1))
	g, err := gateway.New(cfg, gateway.Options{Logger: log, Version: versionString()})
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A reload is not supported: say so rather than ignore it.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
wait:
	select {
	case <-hup:
		log.Warn("SIGHUP: edgegw does not reload its config file; restart it to apply a change (systemctl restart edgegw): the buffer keeps everything across the restart. A fleet's changes come from its KV bucket and are applied live (docs/fleet.md)")
		goto wait
	case err = <-done:
	case <-ctx.Done():
		log.Info("stopping: ingest first, then the forwarder's in-flight acks, then the buffer")
		select {
		case err = <-done:
		case <-time.After(shutdownLimit):
			log.Error("did not stop in time; exiting (the buffer file is safe: every commit is)", "limit", shutdownLimit)
			return 1
		}
	}
	if err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	return 0
}

func cmdConfigCheck(args []string, stdout, stderr io.Writer) int {
	fs := flags("config check", stderr)
	cf := addConfigFlags(fs, defaultConfig)
	cfgPath := cf.config
	connect := fs.Bool("connect", false, "also try the broker (or the embedded broker's listeners), the hub, its credentials and the stream")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := cf.load(false)
	if err == nil {
		err = cfg.CheckFiles()
	}
	var ce *config.Error
	if errors.As(err, &ce) {
		for _, p := range ce.Problems {
			fmt.Fprintf(stderr, "%s: %s\n", *cfgPath, p)
		}
		fmt.Fprintf(stderr, "%d problem(s)\n", len(ce.Problems))
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: OK\n# effective config, secrets hidden:\n%s", *cfgPath, cfg.Summary())
	if !*connect {
		return 0
	}
	failed := 0
	for _, ck := range gateway.CheckConnections(context.Background(), cfg) {
		if ck.Problem != "" {
			failed++
			fmt.Fprintf(stderr, "FAIL %s: %s\n", ck.What, ck.Problem)
		} else {
			fmt.Fprintf(stdout, "ok   %s: %s\n", ck.What, ck.Found)
		}
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "%d connection check(s) failed\n", failed)
		return 1
	}
	return 0
}

// flags is a subcommand's flag set: errors and usage go to stderr.
func flags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func newLogger(w io.Writer, c config.LogConfig) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log level %q is not debug, info, warn or error", c.Level)
	}
	o := &slog.HandlerOptions{Level: lvl}
	switch c.Format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, o)), nil
	}
	return nil, fmt.Errorf("log format %q is not text or json", c.Format)
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// cmdHealth asks a running edgegw's /readyz (or /healthz with --live): a
// health check for images without curl (deploy/Dockerfile) and scripts.
func cmdHealth(args []string, stdout, stderr io.Writer) int {
	fs := flags("health", stderr)
	addr := fs.String("addr", "", "the gateway's http.listen (default: as the config says, else "+config.DefaultHTTPListen+")")
	cf := addConfigFlags(fs, defaultConfig)
	live := fs.Bool("live", false, "ask /healthz (alive) instead of /readyz (ready)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := findAddr(fs, addr, cf); err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	path := "/readyz"
	if *live {
		path = "/healthz"
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(baseURL(*addr) + path)
	if err != nil {
		fmt.Fprintf(stderr, "edgegw: no answer from %s%s: %v (is edgegw running, and is http.listen %s?)\n", baseURL(*addr), path, err, *addr)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Fprint(stdout, string(body))
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}

// findAddr sets addr, unless --addr gave it, from the config's http.listen
// as run reads it: --config, or the default config when it is there; else
// the default address. A wildcard listener is asked on loopback.
func findAddr(fs *flag.FlagSet, addr *string, cf configFlags) error {
	if *addr != "" {
		return nil
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	if _, err := os.Stat(*cf.config); !explicit && errors.Is(err, os.ErrNotExist) {
		*addr = config.DefaultHTTPListen
		return nil
	}
	cfg, err := cf.load(true)
	if err != nil && !explicit {
		*addr = config.DefaultHTTPListen // the default config is not for this; ask the default address
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w\n(the address comes from http.listen; or give --addr)", err)
	}
	if cfg.HTTP.Listen == "off" {
		return fmt.Errorf("%s: http.listen is off: the gateway serves no status to ask", *cf.config)
	}
	host, port, err := net.SplitHostPort(cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("%s: http.listen %q: %w", *cf.config, cfg.HTTP.Listen, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	*addr = net.JoinHostPort(host, port)
	return nil
}

// baseURL is the gateway's HTTP address, taken as http.listen is written
// (127.0.0.1:9180) or as a URL (http://127.0.0.1:9180/).
func baseURL(addr string) string {
	return "http://" + strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(addr, "http://"), "https://"), "/")
}
