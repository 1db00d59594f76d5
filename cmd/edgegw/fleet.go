package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/secret"
	"github.com/edgegw/edgegw/gateway/status"
)

// fleetFlags are the hub connection of the fleet commands.
type fleetFlags struct {
	server, creds, ca, context *string
	configBucket               *string
	statusBucket               *string
}

func addFleetFlags(fs *flag.FlagSet) fleetFlags {
	// No default taken from the environment: --help prints defaults, and
	// $NATS_URL may carry a password.
	return fleetFlags{
		server:       fs.String("server", "", "the hub, nats://[user:password@]host:4222 (default: $NATS_URL, else nats://127.0.0.1:4222)"),
		creds:        fs.String("creds", "", "a .creds file for the hub"),
		ca:           fs.String("ca", "", "a CA file that verifies the hub's TLS certificate"),
		context:      fs.String("context", "", "a nats CLI context (~/.config/nats/context/NAME.json): its url and credentials, as nats --context uses them"),
		configBucket: fs.String("config-bucket", config.DefaultConfigBucket, "the overlays' KV bucket"),
		statusBucket: fs.String("status-bucket", config.DefaultStatusBucket, "the gateways' status KV bucket"),
	}
}

// natsContext is what edgegw reads of a nats CLI context file.
type natsContext struct {
	URL      string `json:"url"`
	User     string `json:"user"`
	Password string `json:"password"`
	Token    string `json:"token"`
	Creds    string `json:"creds"`
	NKey     string `json:"nkey"`
	Cert     string `json:"cert"`
	Key      string `json:"key"`
	CA       string `json:"ca"`
}

// loadNATSContext reads the nats CLI context name from
// $XDG_CONFIG_HOME/nats/context (or ~/.config/nats/context).
func loadNATSContext(name string) (natsContext, error) {
	var c natsContext
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return c, fmt.Errorf("--context %q is not a context name", name)
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return c, fmt.Errorf("--context %s: %w", name, err)
		}
		dir = filepath.Join(home, ".config")
	}
	path := filepath.Join(dir, "nats", "context", name+".json")
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("--context %s: %w (nats context ls lists them)", name, err)
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("--context %s: %s: %w", name, path, err)
	}
	return c, nil
}

func (f fleetFlags) connect() (*nats.Conn, error) {
	opts := []nats.Option{nats.Name("edgegw fleet"), nats.Timeout(5 * time.Second)}
	server := *f.server
	if *f.context != "" {
		c, err := loadNATSContext(*f.context)
		if err != nil {
			return nil, err
		}
		server = cmp.Or(server, c.URL)
		switch {
		case c.Creds != "":
			opts = append(opts, nats.UserCredentials(c.Creds))
		case c.NKey != "":
			nk, err := nats.NkeyOptionFromSeed(c.NKey)
			if err != nil {
				return nil, fmt.Errorf("--context %s: nkey: %w", *f.context, err)
			}
			opts = append(opts, nk)
		case c.Token != "":
			opts = append(opts, nats.Token(c.Token))
		case c.User != "":
			opts = append(opts, nats.UserInfo(c.User, c.Password))
		}
		if c.CA != "" {
			opts = append(opts, nats.RootCAs(c.CA))
		}
		if c.Cert != "" || c.Key != "" {
			opts = append(opts, nats.ClientCert(c.Cert, c.Key))
		}
	}
	server = cmp.Or(server, os.Getenv("NATS_URL"), "nats://127.0.0.1:4222")
	if *f.creds != "" {
		opts = append(opts, nats.UserCredentials(*f.creds))
	}
	if *f.ca != "" {
		opts = append(opts, nats.RootCAs(*f.ca))
	}
	nc, err := nats.Connect(server, opts...)
	if err != nil {
		return nil, fmt.Errorf("hub %s: %w (set --server, --context or NATS_URL, and --creds)", secret.URL(server), err)
	}
	return nc, nil
}

// bucket binds the KV bucket cfg names; one that is missing is made from
// cfg if create, and said so on out.
func bucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, create bool, out io.Writer) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if create && errors.Is(err, jetstream.ErrBucketNotFound) {
		if kv, err = js.CreateKeyValue(ctx, cfg); err == nil {
			fmt.Fprintf(out, "created bucket %s\n", cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

const fleetUsage = `usage:
  edgegw fleet set <gateway id|defaults> FILE [--base LOCAL_CONFIG]   (FILE - for stdin)
  edgegw fleet unset <gateway id|defaults>
  edgegw fleet status
  edgegw fleet call <gateway id> <endpoint> [JSON]
     endpoints: status, config, buffer, sensors.read, mqtt.publish, gpio.set
  flags: --server URL (default $NATS_URL), --context NAME (a nats CLI context), --creds FILE, --ca FILE
`

func cmdFleet(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, fleetUsage)
		return 2
	}
	switch args[0] {
	case "set":
		return cmdFleetSet(args[1:], stdin, stdout, stderr)
	case "unset":
		return cmdFleetUnset(args[1:], stdout, stderr)
	case "status":
		return cmdFleetStatus(args[1:], stdout, stderr)
	case "call":
		return cmdFleetCall(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "edgegw: unknown fleet command %q\n%s", args[0], fleetUsage)
	return 2
}

// positional splits args into flags (parsed by fs) and n positional
// arguments, wherever the flags are.
func positional(fs *flag.FlagSet, args []string, n int, stderr io.Writer) ([]string, bool) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, false
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) < n {
		fmt.Fprint(stderr, fleetUsage)
		return nil, false
	}
	return pos, true
}

// keyFor is the config bucket's key of a target: defaults, or gw.<id>.
func keyFor(target string) (string, error) {
	if target == "defaults" {
		return "defaults", nil
	}
	if !config.ValidID(target) {
		return "", fmt.Errorf("%q is not a gateway id (letters, digits, '-' and '_') or defaults", target)
	}
	return "gw." + target, nil
}

// checkOverlay checks an overlay as a gateway would: over base (a
// gateway's local file) if given, else over a minimal config, reporting
// only the problems in the overlay itself.
func checkOverlay(target, key string, data []byte, basePath string) error {
	var base *config.Config
	var err error
	if basePath != "" {
		base, err = config.LoadWith(basePath, config.LoadOptions{Offline: true})
	} else {
		id := target
		if target == "defaults" {
			id = "any-gateway"
		}
		minimal := fmt.Sprintf("gateway:\n  id: %s\nmqtt:\n  broker: tcp://127.0.0.1:1883\n  subscriptions:\n    - topic: sensors/#\nupstream:\n  servers: [nats://127.0.0.1:4222]\n", id)
		base, err = config.Parse("(a stand-in for the gateway's own file: give --base FILE to check over it)", []byte(minimal), func(string) (string, bool) { return "x", true })
	}
	if err != nil {
		return fmt.Errorf("--base: %w", err)
	}
	_, err = base.WithOverlays(config.Overlay{Name: key, Data: data})
	var ce *config.Error
	if !errors.As(err, &ce) || basePath != "" {
		return err
	}
	own := slices.DeleteFunc(slices.Clone(ce.Problems), func(p config.Problem) bool { return p.Source == "" })
	if len(own) == 0 {
		return nil
	}
	ce.Problems = own
	return ce
}

func cmdFleetSet(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flags("fleet set", stderr)
	ff := addFleetFlags(fs)
	basePath := fs.String("base", "", "a gateway's local config: check the overlay over it")
	pos, ok := positional(fs, args, 2, stderr)
	if !ok {
		return 2
	}
	key, err := keyFor(pos[0])
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 2
	}
	var data []byte
	if pos[1] == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(pos[1])
	}
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	if err := checkOverlay(pos[0], key, data, *basePath); err != nil {
		fmt.Fprintln(stderr, "edgegw: not set:", err)
		return 1
	}
	nc, err := ff.connect()
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, _ := jetstream.New(nc)
	kv, err := bucket(ctx, js, jetstream.KeyValueConfig{Bucket: *ff.configBucket, History: 10, Description: "edgegw config overlays (docs/fleet.md)"}, true, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	// The gateways write their state there; a hub that does not let them
	// make it needs it made here.
	bucket(ctx, js, jetstream.KeyValueConfig{Bucket: *ff.statusBucket, Description: "edgegw gateways' state (docs/fleet.md)"}, true, stdout)
	rev, err := kv.Put(ctx, key, data)
	if err != nil {
		fmt.Fprintf(stderr, "edgegw: put %s: %v\n", key, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s set at revision %d; edgegw fleet status shows when it is applied\n", key, rev)
	return 0
}

func cmdFleetUnset(args []string, stdout, stderr io.Writer) int {
	fs := flags("fleet unset", stderr)
	ff := addFleetFlags(fs)
	pos, ok := positional(fs, args, 1, stderr)
	if !ok {
		return 2
	}
	key, err := keyFor(pos[0])
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 2
	}
	nc, err := ff.connect()
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, _ := jetstream.New(nc)
	kv, err := bucket(ctx, js, jetstream.KeyValueConfig{Bucket: *ff.configBucket}, false, nil)
	if err == nil {
		err = kv.Delete(ctx, key)
	}
	if err != nil {
		fmt.Fprintf(stderr, "edgegw: unset %s: %v\n", key, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s removed; the gateways drop it\n", key)
	return 0
}

func cmdFleetStatus(args []string, stdout, stderr io.Writer) int {
	fs := flags("fleet status", stderr)
	ff := addFleetFlags(fs)
	asJSON := fs.Bool("json", false, "every gateway's status as JSON (the status bucket's records, whole)")
	if _, ok := positional(fs, args, 0, stderr); !ok {
		return 2
	}
	nc, err := ff.connect()
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, _ := jetstream.New(nc)
	kv, err := bucket(ctx, js, jetstream.KeyValueConfig{Bucket: *ff.statusBucket}, false, nil)
	if err != nil {
		fmt.Fprintf(stderr, "edgegw: %v (no gateway has reported yet?)\n", err)
		return 1
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	var rows []status.FleetStatus
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var st status.FleetStatus
		if json.Unmarshal(e.Value(), &st) == nil {
			rows = append(rows, st)
		}
	}
	if len(rows) == 0 && *asJSON {
		fmt.Fprintln(stdout, "[]")
		return 0
	}
	if len(rows) == 0 {
		fmt.Fprintln(stdout, "no gateway has reported yet (a gateway writes its status when it starts with a fleet: section, and on every heartbeat)")
		return 0
	}
	slices.SortFunc(rows, func(a, b status.FleetStatus) int { return strings.Compare(a.Gateway, b.Gateway) })
	if *asJSON {
		out, _ := json.MarshalIndent(rows, "", "  ")
		fmt.Fprintln(stdout, string(out))
		return 0
	}
	printFleetTable(stdout, rows, time.Now())
	return 0
}

// printFleetTable writes one line per gateway.
func printFleetTable(w io.Writer, rows []status.FleetStatus, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GATEWAY\tSTATE\tDESIRED\tAPPLIED\tUPLINK\tBACKLOG\tOLDEST\tHEARTBEAT\tERROR")
	for _, st := range rows {
		uplink, backlog, oldest, beat := "-", "-", "-", "never"
		if hb := st.Heartbeat; hb != nil {
			uplink = map[bool]string{true: "up", false: "down"}[hb.Uplink]
			backlog = fmt.Sprint(hb.Backlog)
			oldest = (time.Duration(hb.OldestAgeSeconds) * time.Second).String()
			beat = now.Sub(hb.At).Round(time.Second).String() + " ago"
		}
		msg := st.Error
		if msg == "" && st.Heartbeat != nil && st.Heartbeat.NotReady != "" {
			msg = "not ready: " + st.Heartbeat.NotReady
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", st.Gateway, st.State, st.DesiredRevision, st.AppliedRevision, uplink, backlog, oldest, beat, msg)
	}
	tw.Flush()
}
