// Command edgegw is the edge gateway service.
//
//	edgegw run --config /etc/edgegw/edgegw.yaml
//	edgegw config check --config /etc/edgegw/edgegw.yaml
//	edgegw buffer stats --config /etc/edgegw/edgegw.yaml   (or --path buffer.db)
//	edgegw health [--addr 127.0.0.1:9180] [--live]
//	edgegw version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/sensors"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/host/v3"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

const usage = `usage:
  edgegw run --config FILE [--log-format text|json] [--log-level LEVEL]
  edgegw config check --config FILE
  edgegw buffer stats (--config FILE | --path BUFFER_FILE)
  edgegw sensors read --config FILE
  edgegw i2c scan [--bus 1]
  edgegw health [--addr 127.0.0.1:9180] [--live]
  edgegw version
`

// defaultConfig is where the packaged service keeps its config.
const defaultConfig = "/etc/edgegw/edgegw.yaml"

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
	case args[0] == "i2c" && len(args) > 1 && args[1] == "scan":
		return cmdI2CScan(args[2:], stdout, stderr)
	case args[0] == "sensors" && len(args) > 1 && args[1] == "read":
		return cmdSensorsRead(args[2:], stdout, stderr)
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

func cmdRun(args []string, stderr io.Writer) int {
	fs := flags("run", stderr)
	cfgPath := fs.String("config", defaultConfig, "config file")
	format := fs.String("log-format", "", "text or json (overrides log.format)")
	level := fs.String("log-level", "", "debug, info, warn or error (overrides log.level)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := gateway.LoadConfig(*cfgPath)
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
	log.Info("starting", "version", versionString(), "config", *cfgPath)
	g, err := gateway.New(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	g.Version = versionString()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	select {
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
	cfgPath := fs.String("config", defaultConfig, "config file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := gateway.LoadConfig(*cfgPath)
	var ce *gateway.ConfigError
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
	return 0
}

func cmdBufferStats(args []string, stdout, stderr io.Writer) int {
	fs := flags("buffer stats", stderr)
	cfgPath := fs.String("config", "", "config file (its buffer.path)")
	path := fs.String("path", "", "buffer file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		if *cfgPath == "" {
			*cfgPath = defaultConfig
		}
		cfg, err := gateway.LoadConfig(*cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, "edgegw:", err)
			return 1
		}
		*path = cfg.Buffer.Path
	}
	st, err := buffer.ReadStats(*path, time.Second)
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	oldest := "-"
	if !st.Oldest.IsZero() {
		oldest = fmt.Sprintf("%s (%s ago)", st.Oldest.UTC().Format(time.RFC3339), st.OldestAge.Round(time.Second))
	}
	fmt.Fprintf(stdout, "buffer:          %s\nfile size:       %d bytes\nevents held:     %d\nbytes held:      %d\noldest event:    %s\nseq range:       %d .. %d\nappended total:  %d\nacked total:     %d\ndropped (full):  %d\ndropped (age):   %d\n",
		*path, st.FileBytes, st.Events, st.Bytes, oldest, st.FirstSeq, st.NextSeq-1, st.Appended, st.Acked, st.DroppedFull, st.DroppedAge)
	return 0
}

// cmdI2CScan lists the addresses that answer on a bus, and the sensors
// known to use them.
func cmdI2CScan(args []string, stdout, stderr io.Writer) int {
	fs := flags("i2c scan", stderr)
	name := fs.String("bus", "1", "I²C bus: a number or /dev/i2c-N")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, err := host.Init(); err != nil {
		fmt.Fprintln(stderr, "edgegw: periph:", err)
		return 1
	}
	bus, err := i2creg.Open(*name)
	if err != nil {
		fmt.Fprintf(stderr, "edgegw: I²C bus %q: %v (is I²C enabled, e.g. raspi-config, and is the user in group i2c?)\n", *name, err)
		return 1
	}
	defer bus.Close()
	found := sensors.Scan(bus)
	for _, f := range found {
		known := "unknown"
		if len(f.Known) > 0 {
			known = strings.Join(f.Known, " or ")
		}
		fmt.Fprintf(stdout, "%#04x  %s\n", f.Addr, known)
	}
	fmt.Fprintf(stdout, "%d device(s) on bus %s\n", len(found), *name)
	return 0
}

// cmdSensorsRead reads every configured sensor once: a field check for
// installers. It exits 1 if any sensor cannot be read.
func cmdSensorsRead(args []string, stdout, stderr io.Writer) int {
	fs := flags("sensors read", stderr)
	cfgPath := fs.String("config", defaultConfig, "config file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := gateway.LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	g, err := gateway.New(cfg, nil)
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	pollers, err := g.Pollers()
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	if len(pollers) == 0 {
		fmt.Fprintln(stderr, "edgegw: no sensors in", *cfgPath)
		return 1
	}
	code := 0
	for _, p := range pollers {
		ts, vals, err := p.ReadOnce()
		if err != nil {
			fmt.Fprintf(stdout, "%-24s FAILED  %v\n", p.Name(), err)
			code = 1
			continue
		}
		names := make([]string, 0, len(vals))
		for k := range vals {
			names = append(names, k)
		}
		sort.Strings(names)
		var b strings.Builder
		for _, k := range names {
			fmt.Fprintf(&b, "  %s=%g", k, vals[k])
		}
		fmt.Fprintf(stdout, "%-24s %s%s\n", p.Name(), ts.Format(time.RFC3339), b.String())
	}
	return code
}

// flags is a subcommand's flag set: errors and usage go to stderr.
func flags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func newLogger(w io.Writer, c gateway.LogConfig) (*slog.Logger, error) {
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
	addr := fs.String("addr", gateway.DefaultHTTPListen, "the gateway's http.listen")
	live := fs.Bool("live", false, "ask /healthz (alive) instead of /readyz (ready)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	path := "/readyz"
	if *live {
		path = "/healthz"
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + *addr + path)
	if err != nil {
		fmt.Fprintf(stderr, "edgegw: no answer from %s%s: %v (is edgegw running, and is http.listen %s?)\n", *addr, path, err, *addr)
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
