package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"

	"golang.org/x/term"
	"gopkg.in/yaml.v3"

	"github.com/edgegw/edgegw/gateway/mqttbroker"
)

// cmdMQTTUser edits the embedded broker's users file as mosquitto_passwd
// does mosquitto's: add, passwd, remove, list. The file is edited as YAML
// nodes, so other users, their ACLs and the comments stay as they were;
// the result is checked as the broker would load it, then renamed into
// place. A password never comes from the command line (other users of the
// box see argv): a prompt on a terminal, else the first line of stdin, or
// --password-file.
func cmdMQTTUser(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mqttUserUsage)
		return 2
	}
	op := args[0]
	fs := flags("mqtt user "+op, stderr)
	file := fs.String("users-file", "/etc/edgegw/mqtt-users.yaml", "the users file (mqtt.server.users_file)")
	pwFile := fs.String("password-file", "", "read the password from the first line of FILE (else a prompt, or stdin)")
	var publish, subscribe listFlag
	if op == "add" {
		fs.Var(&publish, "publish", "a topic filter the user may publish to (repeat, or comma-separated)")
		fs.Var(&subscribe, "subscribe", "a topic filter the user may subscribe to (repeat, or comma-separated)")
	}
	name, rest := "", args[1:]
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		name, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return 2
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
	}
	if op != "list" && name == "" {
		fmt.Fprintf(stderr, "edgegw: mqtt user %s needs the user's name\n%s", op, mqttUserUsage)
		return 2
	}
	uf, err := readUsersFile(*file, op == "add")
	if err == nil {
		switch op {
		case "list":
			return uf.list(stdout)
		case "add", "passwd":
			var hash string
			if hash, err = newPasswordHash(name, *pwFile, stdin, stderr); err == nil {
				if op == "add" {
					err = uf.add(name, hash, publish, subscribe)
				} else {
					err = uf.passwd(name, hash)
				}
			}
		case "remove":
			err = uf.remove(name)
		default:
			fmt.Fprintf(stderr, "edgegw: unknown mqtt user command %q\n%s", op, mqttUserUsage)
			return 2
		}
	}
	if err == nil {
		err = uf.save()
	}
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s %s; restart edgegw to take it (systemctl restart edgegw)\n", *file, pastTense[op], name)
	return 0
}

const mqttUserUsage = `usage:
  edgegw mqtt user add NAME [--publish FILTER]... [--subscribe FILTER]... [--users-file FILE] [--password-file FILE]
  edgegw mqtt user passwd NAME [--users-file FILE] [--password-file FILE]
  edgegw mqtt user remove NAME [--users-file FILE]
  edgegw mqtt user list [--users-file FILE]
The password: a prompt on a terminal, else the first line of stdin, or --password-file.
`

var pastTense = map[string]string{"add": "added", "passwd": "new password for", "remove": "removed"}

// listFlag collects a repeated or comma-separated flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			*l = append(*l, f)
		}
	}
	return nil
}

var _ flag.Value = (*listFlag)(nil)

// newPasswordHash reads a password (a prompt twice on a terminal, else
// the first line of file or stdin) and hashes it.
func newPasswordHash(name, file string, stdin io.Reader, stderr io.Writer) (string, error) {
	var pw string
	switch f, isFile := stdin.(*os.File); {
	case file != "":
		data, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("the password: %w", err)
		}
		pw, _, _ = strings.Cut(string(data), "\n")
	case isFile && term.IsTerminal(int(f.Fd())):
		fmt.Fprintf(stderr, "password for %s: ", name)
		a, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", fmt.Errorf("the password: %w", err)
		}
		fmt.Fprint(stderr, "again: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", fmt.Errorf("the password: %w", err)
		}
		if !bytes.Equal(a, b) {
			return "", errors.New("the two passwords differ; nothing changed")
		}
		pw = string(a)
	default:
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && err != io.EOF {
			return "", fmt.Errorf("read the password from stdin: %w", err)
		}
		pw = line
	}
	pw = strings.TrimRight(pw, "\r\n")
	if pw == "" {
		return "", errors.New("empty password: give it on stdin, at the prompt, or with --password-file; nothing changed")
	}
	return mqttbroker.HashPassword(pw)
}

// usersFile is a users file as YAML nodes.
type usersFile struct {
	path  string
	mode  fs.FileMode
	owner *syscall.Stat_t // the old file's owner and group, kept
	doc   yaml.Node
	users *yaml.Node // the sequence under users
}

func readUsersFile(path string, create bool) (*usersFile, error) {
	uf := &usersFile{path: path, mode: 0o600}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		data = []byte("# Users of edgegw's own MQTT broker (mqtt.server.users_file, docs/mqtt-server.md).\n# Edit with: edgegw mqtt user add|passwd|remove|list\nusers: []\n")
	case err != nil:
		return nil, fmt.Errorf("users file: %w", err)
	default:
		if st, err := os.Stat(path); err == nil {
			uf.mode = st.Mode().Perm()
			uf.owner, _ = st.Sys().(*syscall.Stat_t)
		}
	}
	if err := yaml.Unmarshal(data, &uf.doc); err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	if uf.doc.Kind == 0 { // an empty file
		uf.doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode}}}
	}
	root := uf.doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("users file %s: not a map with a list under users (see deploy/mqtt-users.example.yaml)", path)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "users" {
			uf.users = root.Content[i+1]
		}
	}
	if uf.users == nil {
		uf.users = &yaml.Node{Kind: yaml.SequenceNode}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "users"}, uf.users)
	}
	if uf.users.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("users file %s: users is not a list (see deploy/mqtt-users.example.yaml)", path)
	}
	uf.users.Style = 0 // block style, also for a file that began as users: []
	return uf, nil
}

// find returns the index of the user called name, or -1.
func (uf *usersFile) find(name string) int {
	for i, u := range uf.users.Content {
		if v := mapValue(u, "name"); v != nil && v.Value == name {
			return i
		}
	}
	return -1
}

func (uf *usersFile) add(name, hash string, publish, subscribe []string) error {
	if uf.find(name) >= 0 {
		return fmt.Errorf("user %s is already in %s (edgegw mqtt user passwd %s for a new password); nothing changed", name, uf.path, name)
	}
	u := &yaml.Node{Kind: yaml.MappingNode}
	setMapValue(u, "name", &yaml.Node{Kind: yaml.ScalarNode, Value: name})
	setMapValue(u, "password_hash", &yaml.Node{Kind: yaml.ScalarNode, Value: hash, Style: yaml.DoubleQuotedStyle})
	for _, acl := range []struct {
		key     string
		filters []string
	}{{"publish", publish}, {"subscribe", subscribe}} {
		seq := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, f := range acl.filters {
			seq.Content = append(seq.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: f})
		}
		setMapValue(u, acl.key, seq)
	}
	uf.users.Content = append(uf.users.Content, u)
	if len(publish)+len(subscribe) == 0 {
		return fmt.Errorf("user %s would be allowed nothing: give --publish and/or --subscribe topic filters (e.g. --publish 'sensors/lobby/#'); nothing changed", name)
	}
	return nil
}

func (uf *usersFile) passwd(name, hash string) error {
	i := uf.find(name)
	if i < 0 {
		return fmt.Errorf("no user %s in %s (edgegw mqtt user add %s); nothing changed", name, uf.path, name)
	}
	setMapValue(uf.users.Content[i], "password_hash", &yaml.Node{Kind: yaml.ScalarNode, Value: hash, Style: yaml.DoubleQuotedStyle})
	return nil
}

func (uf *usersFile) remove(name string) error {
	i := uf.find(name)
	if i < 0 {
		return fmt.Errorf("no user %s in %s; nothing changed", name, uf.path)
	}
	if len(uf.users.Content) == 1 {
		return fmt.Errorf("%s is the last user of %s, and the broker refuses a users file with none (add another first, or set mqtt.server.allow_anonymous on a trusted network); nothing changed", name, uf.path)
	}
	uf.users.Content = append(uf.users.Content[:i], uf.users.Content[i+1:]...)
	return nil
}

func (uf *usersFile) list(stdout io.Writer) int {
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tPUBLISH\tSUBSCRIBE")
	for _, u := range uf.users.Content {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", scalar(mapValue(u, "name")), filters(mapValue(u, "publish")), filters(mapValue(u, "subscribe")))
	}
	tw.Flush()
	return 0
}

// save checks the edited file as the broker loads it, then replaces the
// old one: written beside it, synced, renamed.
func (uf *usersFile) save() error {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&uf.doc); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(uf.path), ".mqtt-users-*.yaml")
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b.Bytes())
	if err == nil {
		err = tmp.Chmod(uf.mode)
	}
	if err == nil && uf.owner != nil && (int(uf.owner.Uid) != os.Getuid() || int(uf.owner.Gid) != os.Getgid()) {
		err = tmp.Chown(int(uf.owner.Uid), int(uf.owner.Gid))
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if _, err := mqttbroker.LoadUsers(tmp.Name()); err != nil {
		return fmt.Errorf("%w; nothing changed", err)
	}
	if err := os.Rename(tmp.Name(), uf.path); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	return nil
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func setMapValue(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, v)
}

func scalar(n *yaml.Node) string {
	if n == nil {
		return "-"
	}
	return n.Value
}

func filters(n *yaml.Node) string {
	if n == nil || len(n.Content) == 0 {
		return "-"
	}
	var fs []string
	for _, c := range n.Content {
		fs = append(fs, c.Value)
	}
	return strings.Join(fs, ",")
}
