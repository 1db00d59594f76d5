// Command edgegw is the edge gateway service.
//
//	edgegw run --config /etc/edgegw/edgegw.yaml
//	edgegw config check --config /etc/edgegw/edgegw.yaml
//	edgegw buffer stats --config /etc/edgegw/edgegw.yaml   (or --path buffer.db)
//	edgegw buffer dead-letters --config /etc/edgegw/edgegw.yaml [--export FILE] [--drop]
//	edgegw health [--addr 127.0.0.1:9180] [--live]
//	edgegw version
package main

import (
	"context"
	"encoding/json"
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
	"github.com/edgegw/edgegw/gateway/event"
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
  edgegw buffer dead-letters (--config FILE | --path BUFFER_FILE) [--export FILE] [--drop]
  edgegw sensors read --config FILE
  edgegw i2c scan [--bus 1]
  edgegw health [--addr 127.0.0.1:9180] [--live]
  edgegw version
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
	log.Info("starting", "version", versionString(), "config", *cfgPath)
	g, err := gateway.New(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	g.Version = versionString()
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
		log.Warn("SIGHUP: edgegw does not reload its config; restart it to apply a change (systemctl restart edgegw): the buffer keeps everything across the restart")
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
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := cf.load(false)
	if err == nil {
		err = cfg.CheckFiles()
	}
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

// bufferPath is the buffer file a command names with --path, or the one
// its config names (read offline: no secrets needed).
func bufferPath(cf configFlags, path string) (string, error) {
	if path != "" {
		return path, nil
	}
	cfg, err := cf.load(true)
	if err != nil {
		return "", err
	}
	return cfg.Buffer.Path, nil
}

func cmdBufferStats(args []string, stdout, stderr io.Writer) int {
	fs := flags("buffer stats", stderr)
	cf := addConfigFlags(fs, defaultConfig)
	path := fs.String("path", "", "buffer file (instead of the config's buffer.path)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	if *path, err = bufferPath(cf, *path); err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
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
	fmt.Fprintf(stdout, "dead letters:    %d (%d bytes; %d set aside in all, %d dropped at the lane's bound)\n", st.DeadEvents, st.DeadBytes, st.DeadTotal, st.DeadDropped)
	if st.DeadEvents > 0 {
		fmt.Fprintf(stdout, "                 list, export or drop them: edgegw buffer dead-letters --path %s\n", *path)
	}
	if st.Quarantined > 0 {
		fmt.Fprintf(stdout, "quarantined:     %d damaged file(s); last: %s\n", st.Quarantined, st.LastQuarantine)
	}
	return 0
}

// deadLetterJSON is one line of an export: the event decoded where it
// still decodes, its bytes in any case.
type deadLetterJSON struct {
	ID       uint64    `json:"id"`
	Seq      uint64    `json:"seq,omitempty"`
	SetAside time.Time `json:"set_aside"`
	Reason   string    `json:"reason"`
	Size     int       `json:"size"`
	Subject  string    `json:"subject,omitempty"`
	Source   string    `json:"source,omitempty"`
	Time     time.Time `json:"time,omitzero"`
	Payload  []byte    `json:"payload,omitempty"` // base64
	Raw      []byte    `json:"raw,omitempty"`     // the stored bytes, when they do not decode
}

// cmdDeadLetters lists the events set aside in the buffer's dead-letter
// lane; --export writes them as JSON lines, --drop deletes them. The
// gateway must be stopped (the file is locked while it runs).
func cmdDeadLetters(args []string, stdout, stderr io.Writer) int {
	fs := flags("buffer dead-letters", stderr)
	cf := addConfigFlags(fs, defaultConfig)
	path := fs.String("path", "", "buffer file (instead of the config's buffer.path)")
	export := fs.String("export", "", "write every dead letter to this file as JSON lines")
	drop := fs.Bool("drop", false, "delete the dead letters listed (export them first)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	if *path, err = bufferPath(cf, *path); err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	dead, err := buffer.ReadDeadLetters(*path, time.Second)
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	for _, d := range dead {
		fmt.Fprintf(stdout, "%6d  seq %-20d %s  %8d bytes  %s\n", d.ID, d.Seq, d.Time.UTC().Format(time.RFC3339), d.Size, d.Reason)
	}
	fmt.Fprintf(stdout, "%d dead letter(s) in %s\n", len(dead), *path)
	if *export != "" {
		if err := writeDeadLetters(*export, dead); err != nil {
			fmt.Fprintln(stderr, "edgegw:", err)
			return 1
		}
		fmt.Fprintf(stdout, "exported to %s\n", *export)
	}
	if *drop && len(dead) > 0 {
		q, err := buffer.Open(*path, &buffer.Options{LockTimeout: time.Second})
		if err != nil {
			fmt.Fprintln(stderr, "edgegw:", err)
			return 1
		}
		n, err := q.DropDead(context.Background(), dead[len(dead)-1].ID)
		if cerr := q.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			fmt.Fprintln(stderr, "edgegw:", err)
			return 1
		}
		fmt.Fprintf(stdout, "dropped %d\n", n)
	}
	return 0
}

func writeDeadLetters(name string, dead []buffer.DeadLetter) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, d := range dead {
		j := deadLetterJSON{ID: d.ID, Seq: d.Seq, SetAside: d.Time.UTC(), Reason: d.Reason, Size: d.Size}
		var e event.Event
		if err := e.Unmarshal(d.Data); err == nil {
			j.Subject, j.Source, j.Time, j.Payload = e.Subject, e.Source, e.Time, e.Payload
		} else {
			j.Raw = d.Data
		}
		if err := enc.Encode(j); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
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
		if len(i2creg.All()) == 0 {
			fmt.Fprintf(stderr, "edgegw: no I²C bus on this machine (no /dev/i2c-*): enable I²C (sudo raspi-config nonint do_i2c 0, or dtparam=i2c_arm=on in /boot/firmware/config.txt) and reboot\n")
		} else {
			fmt.Fprintf(stderr, "edgegw: I²C bus %q: %v; the buses here are: %s (is the user in group i2c?)\n", *name, err, busNames())
		}
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
	cf := addConfigFlags(fs, defaultConfig)
	cfgPath := cf.config
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := cf.load(true)
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
	var events int
	for _, sc := range cfg.Sensors {
		if sc.Driver == "gpio_edge" || sc.Driver == "pulse_counter" {
			events++
			fmt.Fprintf(stdout, "%-24s not read: a %s on %s reports edges as they happen; watch them with edgegw run --log-level debug\n", sc.Name, sc.Driver, sc.Pin)
		}
	}
	if len(pollers) == 0 && events == 0 {
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

// configFlags are the flags of every command that reads the config.
type configFlags struct {
	config, envFile *string
}

func addConfigFlags(fs *flag.FlagSet, config string) configFlags {
	return configFlags{
		config:  fs.String("config", config, "config file"),
		envFile: fs.String("env-file", defaultEnvFile, "KEY=VALUE file for the config's ${VAR}s, as the unit's EnvironmentFile= (skipped when the default is absent)"),
	}
}

// load reads the config, resolving ${VAR} from the environment first,
// then from the env file. offline: a command that connects to nothing
// does not need the connections' secrets.
func (c configFlags) load(offline bool) (*gateway.Config, error) {
	env, err := readEnvFile(*c.envFile, *c.envFile == defaultEnvFile)
	if err != nil {
		return nil, err
	}
	lookup := func(k string) (string, bool) {
		if v, ok := os.LookupEnv(k); ok {
			return v, true
		}
		v, ok := env[k]
		return v, ok
	}
	return gateway.LoadConfigWith(*c.config, gateway.LoadOptions{Lookup: lookup, Offline: offline})
}

// readEnvFile reads a systemd EnvironmentFile: KEY=VALUE lines, # comments,
// values optionally in quotes. A missing file is no error when optional.
func readEnvFile(name string, optional bool) (map[string]string, error) {
	env := map[string]string{}
	if name == "" {
		return env, nil
	}
	data, err := os.ReadFile(name)
	if optional && errors.Is(err, os.ErrNotExist) {
		return env, nil
	}
	if err != nil {
		return nil, fmt.Errorf("env file: %w (it holds the config's secrets: run as root, e.g. with sudo, or point --env-file elsewhere)", err)
	}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("env file %s:%d: not KEY=VALUE", name, i+1)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		env[k] = v
	}
	return env, nil
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
	// Take http.listen as written, or a URL.
	*addr = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(*addr, "http://"), "https://"), "/")
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

func busNames() string {
	var names []string
	for _, r := range i2creg.All() {
		names = append(names, r.Name)
	}
	return strings.Join(names, ", ")
}
