package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/mqttbroker"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// mqttUser runs edgegw mqtt user with stdin.
func mqttUser(stdin string, args ...string) (code int, out, errs string) {
	var o, e bytes.Buffer
	code = cmdMQTTUser(args, strings.NewReader(stdin), &o, &e)
	return code, o.String(), e.String()
}

// edgegw mqtt user edits the embedded broker's users file as
// mosquitto_passwd does mosquitto's: the users it adds log in to a real
// broker with their password and ACL, passwd changes only the password,
// remove takes one user out; comments and other users stay; every refusal
// changes nothing and says why.
func TestMQTTUserCommands(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mqtt-users.yaml")
	users := "--users-file=" + file
	if code, _, errs := mqttUser("pw-one\n", "add", "lobby-01", users, "--publish", "sensors/lobby/#"); code != 0 {
		t.Fatalf("add to a new file: %d %s", code, errs)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("a new users file: %v %v, want mode 0600", st.Mode(), err)
	}
	// A comment and a hand-written user stay through every edit.
	data, _ := os.ReadFile(file)
	os.WriteFile(file, append(data, []byte("  # the dashboard, by hand\n  - {name: dash, password_hash: \"$2a$10$48LthTbj3xXxg4Fz2geXEuinKOhjNNJqqSaTrcT64AnfbcqmnPkau\", subscribe: [\"sensors/#\"]}\n")...), 0o600)
	os.Chmod(file, 0o640)
	if os.Getuid() == 0 {
		os.Chown(file, 0, 4242) // a group the file is kept for
	}
	pwFile := filepath.Join(dir, "pw")
	os.WriteFile(pwFile, []byte("pw-two\nignored\n"), 0o600)
	if code, _, errs := mqttUser("", "add", "lobby-02", users, "--password-file", pwFile, "--publish", "sensors/a/#,sensors/b/#", "--subscribe", "cmd/lobby-02/#"); code != 0 {
		t.Fatalf("add with --password-file: %d %s", code, errs)
	}
	if code, _, errs := mqttUser("pw-one-new\n", "passwd", "lobby-01", users); code != 0 {
		t.Fatalf("passwd: %d %s", code, errs)
	}
	if code, _, errs := mqttUser("", "remove", "dash", users); code != 0 {
		t.Fatalf("remove: %d %s", code, errs)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o640 {
		t.Errorf("the file's mode went from 0640 to %v", st.Mode().Perm())
	} else if gid := st.Sys().(*syscall.Stat_t).Gid; os.Getuid() == 0 && gid != 4242 {
		t.Errorf("the file's group went from 4242 to %d", gid)
	}
	if data, _ := os.ReadFile(file); !strings.Contains(string(data), "# Users of edgegw's own MQTT broker") {
		t.Errorf("the file's comment is gone:\n%s", data)
	}
	code, out, _ := mqttUser("", "list", users)
	if code != 0 || !strings.Contains(out, "lobby-01  sensors/lobby/#") || !strings.Contains(out, "sensors/a/#,sensors/b/#  cmd/lobby-02/#") || strings.Contains(out, "dash") || strings.Contains(out, "$2a$") {
		t.Fatalf("list: %d\n%s", code, out)
	}

	// Refusals change nothing and say what to do.
	before, _ := os.ReadFile(file)
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"x\n", []string{"add", "lobby-01", users, "--publish", "a"}, "already in"},
		{"x\n", []string{"add", "quiet", users}, "allowed nothing"},
		{"\n", []string{"add", "blank", users, "--publish", "a"}, "empty password"},
		{"x\n", []string{"add", "bad", users, "--publish", "a/#/b"}, "users[2] (bad)"},
		{"x\n", []string{"passwd", "nobody", users}, "no user nobody"},
		{"", []string{"remove", "nobody", users}, "no user nobody"},
		{"", []string{"list", "--users-file", filepath.Join(dir, "none.yaml")}, "no such file"},
	} {
		code, _, errs := mqttUser(tc.stdin, tc.args...)
		if code != 1 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d %q, want 1 and %q", tc.args, code, errs, tc.want)
		}
		if after, _ := os.ReadFile(file); !bytes.Equal(after, before) {
			t.Fatalf("%v changed the file", tc.args)
		}
	}
	if code, _, errs := mqttUser("", "remove", "lobby-02", users); code != 0 {
		t.Fatalf("remove: %d %s", code, errs)
	}
	if code, _, errs := mqttUser("", "remove", "lobby-01", users); code != 1 || !strings.Contains(errs, "last user") {
		t.Fatalf("removing the last user: %d %s", code, errs)
	}
	if code, _, _ := mqttUser("", "add", users); code != 2 {
		t.Errorf("add without a name: exit %d, want 2", code)
	}

	// The broker takes the file: the new password logs in, the old one
	// does not, and the ACL is the one given.
	loaded, err := mqttbroker.LoadUsers(file)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(t))
	b, err := mqttbroker.New(mqttbroker.Options{Listen: addr, Users: loaded})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, func(context.Context, ...event.Event) error { return nil }) }()
	defer func() { cancel(); <-done }()
	login := func(pw string) error {
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("lobby-01").
			SetUsername("lobby-01").SetPassword(pw).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second))
		tok := c.Connect()
		tok.WaitTimeout(30 * time.Second)
		if tok.Error() == nil {
			c.Disconnect(0)
		}
		return tok.Error()
	}
	wait.For(t, "the broker's listener", func() bool { return login("pw-one-new") == nil })
	if err := login("pw-one"); err == nil {
		t.Error("the old password still logs in after passwd")
	}
}
