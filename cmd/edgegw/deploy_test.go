package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"gopkg.in/yaml.v3"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// The deploy files agree with each other and with the binary: the paths
// the binary defaults to, the files the image copies, the volumes compose
// mounts. None of them can be run by go test (no systemd or docker here;
// .ci/run checks the unit with systemd-analyze), so this keeps them from
// drifting apart.
func TestDeployFilesAgree(t *testing.T) {
	read := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join("../..", p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	exists := func(p string) {
		t.Helper()
		if _, err := os.Stat(filepath.Join("../..", p)); err != nil {
			t.Errorf("%v", err)
		}
	}

	unit := read("deploy/edgegw.service")
	for _, want := range []string{
		"ExecStart=/usr/local/bin/edgegw run --config " + defaultConfig,
		"StateDirectory=" + filepath.Base(config.DefaultDataDir),
		"Restart=always", "DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes",
		"SupplementaryGroups=i2c gpio",
	} {
		if !strings.Contains(unit, want+"\n") {
			t.Errorf("deploy/edgegw.service lacks %q", want)
		}
	}

	docker := read("deploy/Dockerfile")
	for _, m := range regexp.MustCompile(`(?m)^COPY ([^-\s]\S*) `).FindAllStringSubmatch(docker, -1) {
		if m[1] != "." {
			exists(m[1])
		}
	}
	for _, want := range []string{
		"COPY configs/container.yaml " + defaultConfig,
		"VOLUME " + config.DefaultDataDir,
		`CMD ["run", "--config", "` + defaultConfig + `"]`,
		"go build -trimpath -ldflags \"-s -w -X main.version=$VERSION\"",
	} {
		if !strings.Contains(docker, want) {
			t.Errorf("deploy/Dockerfile lacks %q", want)
		}
	}
	// The image puts the example users file where the config points.
	users := "COPY deploy/http-users.example.yaml /etc/edgegw/http-users.yaml"
	if !strings.Contains(docker, users) {
		t.Errorf("deploy/Dockerfile lacks %q", users)
	}
	cfg, err := config.Parse("container.yaml", []byte(read("configs/container.yaml")), func(k string) (string, bool) {
		if k == "EDGEGW_HTTP_USERS" {
			return "../../deploy/http-users.example.yaml", true // /etc/edgegw/http-users.yaml in the image
		}
		return "", false
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Gateway.DataDir != config.DefaultDataDir {
		t.Errorf("configs/container.yaml keeps the buffer in %s, not on the image's volume %s", cfg.Gateway.DataDir, config.DefaultDataDir)
	}

	var compose struct {
		Services map[string]struct {
			Image   string   `yaml:"image"`
			Ports   []string `yaml:"ports"`
			Volumes []string `yaml:"volumes"`
			Build   struct {
				Context    string `yaml:"context"`
				Dockerfile string `yaml:"dockerfile"`
			} `yaml:"build"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal([]byte(read("deploy/compose.yaml")), &compose); err != nil {
		t.Fatalf("deploy/compose.yaml: %v", err)
	}
	for _, name := range []string{"mosquitto", "nats", "edgegw"} {
		s, ok := compose.Services[name]
		if !ok {
			t.Fatalf("deploy/compose.yaml has no service %s", name)
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("compose service %s publishes %s beyond loopback", name, p)
			}
		}
		for _, v := range s.Volumes {
			if src, _, _ := strings.Cut(v, ":"); strings.HasPrefix(src, "./") {
				exists(filepath.Join("deploy", src))
			}
		}
	}
	gw := compose.Services["edgegw"]
	exists(filepath.Join("deploy", gw.Build.Context, gw.Build.Dockerfile))
	if !strings.Contains(strings.Join(gw.Volumes, " "), ":"+config.DefaultDataDir) {
		t.Errorf("compose mounts no volume on %s for the buffer: %v", config.DefaultDataDir, gw.Volumes)
	}
	if !strings.Contains(strings.Join(gw.Ports, " "), "9180:9180") {
		t.Errorf("compose does not publish the metrics port: %v", gw.Ports)
	}
}

// deploy/mosquitto.conf as the guide installs it: in the conf.d of
// Debian's own main config. mosquitto starts with it (it refused to, with
// "Duplicate persistence_location"), refuses anonymous clients, takes the
// logged-in ones, and the guide's command to retire a gateway drops its
// session. Needs mosquitto (EDGEGW_TEST_MOSQUITTO, as .ci/run sets it) and
// Debian's /etc/mosquitto/mosquitto.conf.
func TestMosquittoConfWithDebiansMainConfig(t *testing.T) {
	bin := os.Getenv("EDGEGW_TEST_MOSQUITTO")
	main, err := os.ReadFile("/etc/mosquitto/mosquitto.conf")
	if bin == "" || err != nil {
		t.Skip("needs mosquitto (EDGEGW_TEST_MOSQUITTO) and Debian's /etc/mosquitto/mosquitto.conf; .ci/run installs both")
	}
	dir := t.TempDir()
	port := natstest.FreePort(t)
	// Debian's main config as it is, its paths moved into the test's dir.
	conf := string(main)
	for _, r := range [][2]string{
		{"/run/mosquitto/mosquitto.pid", dir + "/mosquitto.pid"},
		{"/var/lib/mosquitto/", dir + "/"},
		{"/var/log/mosquitto/mosquitto.log", dir + "/mosquitto.log"},
		{"/etc/mosquitto/conf.d", dir + "/conf.d"},
	} {
		if !strings.Contains(conf, r[0]) {
			t.Fatalf("Debian's mosquitto.conf no longer has %s", r[0])
		}
		conf = strings.ReplaceAll(conf, r[0], r[1])
	}
	if os.Geteuid() == 0 {
		conf += "user root\n" // as root it would drop to a user that cannot write here
	}
	ours, err := os.ReadFile("../../deploy/mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	// Ours as it is, but on a test port on loopback, and the password file here.
	edgegw := strings.Replace(string(ours), "listener 1883\n", fmt.Sprintf("listener %d 127.0.0.1\n", port), 1)
	edgegw = strings.Replace(edgegw, "password_file /etc/mosquitto/passwd", "password_file "+dir+"/passwd", 1)
	if edgegw == string(ours) {
		t.Fatal("deploy/mosquitto.conf changed: the test's edits no longer apply")
	}
	os.Mkdir(dir+"/conf.d", 0o700)
	os.WriteFile(dir+"/mosquitto.conf", []byte(conf), 0o600)
	os.WriteFile(dir+"/conf.d/edgegw.conf", []byte(edgegw), 0o600)
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", dir+"/passwd", "edgegw", "pw").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v %s", err, out)
	}
	cmd := exec.Command(bin, "-c", dir+"/mosquitto.conf")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	url := fmt.Sprintf("tcp://127.0.0.1:%d", port)
	connect := func(id, user string, clean bool) (paho.Client, paho.Token) {
		o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(clean).SetUsername(user).SetPassword("pw")
		c := paho.NewClient(o)
		tok := c.Connect()
		tok.WaitTimeout(5 * time.Second)
		return c, tok
	}
	defer func() {
		if t.Failed() {
			log, _ := os.ReadFile(dir + "/mosquitto.log")
			t.Logf("mosquitto with deploy/mosquitto.conf in Debian's conf.d:\n%s%s", out.String(), log)
		}
	}()
	wait.For(t, "mosquitto to take the edgegw user's login", func() bool {
		c, tok := connect("probe", "edgegw", true)
		if tok.Error() != nil {
			return false
		}
		c.Disconnect(0)
		return true
	})
	if _, tok := connect("anon", "", true); tok.Error() == nil {
		t.Fatal("an anonymous client was let in")
	}

	// A gateway's persistent session, with a message queued for it.
	gw, tok := connect("edgegw-old", "edgegw", false)
	if tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	gw.Subscribe("sensors/#", 1, nil).WaitTimeout(5 * time.Second)
	gw.Disconnect(100)
	pub, _ := connect("pub", "edgegw", true)
	pub.Publish("sensors/x", 1, false, "queued").WaitTimeout(5 * time.Second)
	pub.Disconnect(100)
	// The guide's way to retire it.
	if out, err := exec.Command("mosquitto_sub", "-i", "edgegw-old", "-t", "retire", "-E", "-u", "edgegw", "-P", "pw", "-h", "127.0.0.1", "-p", strconv.Itoa(port)).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_sub: %v %s", err, out)
	}
	again, tok := connect("edgegw-old", "edgegw", false)
	defer again.Disconnect(0)
	if ct, ok := tok.(*paho.ConnectToken); !ok || ct.SessionPresent() {
		t.Fatal("the retired gateway's session is still there")
	}
}
