package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/edgegw/edgegw/gateway"
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
		"StateDirectory=" + filepath.Base(gateway.DefaultDataDir),
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
		"VOLUME " + gateway.DefaultDataDir,
		`CMD ["run", "--config", "` + defaultConfig + `"]`,
		"go build -trimpath -ldflags \"-s -w -X main.version=$VERSION\"",
	} {
		if !strings.Contains(docker, want) {
			t.Errorf("deploy/Dockerfile lacks %q", want)
		}
	}
	cfg, err := gateway.ParseConfig("container.yaml", []byte(read("configs/container.yaml")), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Gateway.DataDir != gateway.DefaultDataDir {
		t.Errorf("configs/container.yaml keeps the buffer in %s, not on the image's volume %s", cfg.Gateway.DataDir, gateway.DefaultDataDir)
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
	if !strings.Contains(strings.Join(gw.Volumes, " "), ":"+gateway.DefaultDataDir) {
		t.Errorf("compose mounts no volume on %s for the buffer: %v", gateway.DefaultDataDir, gw.Volumes)
	}
	if !strings.Contains(strings.Join(gw.Ports, " "), "9180:9180") {
		t.Errorf("compose does not publish the metrics port: %v", gw.Ports)
	}
}
