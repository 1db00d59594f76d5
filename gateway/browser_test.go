package gateway_test

import (
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// chromium finds a headless browser, or skips saying how to get one
// (.ci/run installs Debian's chromium and fails if this skipped).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium on this machine (apt-get install chromium): the page is not tested in a browser here")
	return ""
}

// The page in a real browser, as a phone shows it: the DOM after
// rendering names the gateway, the uplink's state, each lane and each
// source; a screenshot at a phone's width is an image, not blank.
func TestPageInABrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	browser := chromium(t)
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	zero := 0
	cfg.MQTT.Subscriptions[0].Route.Priority = &zero
	cfg.Gateway.Storage = &config.StorageConfig{Size: 32e9, RatedWrites: 3000}
	g := startGateway(t, cfg)
	srv.Shutdown() // a backlog, and the uplink down
	newPublisher(t, broker.URL(), "pub", true).publish(0, 5, 5, 0)
	wait.For(t, "5 held", func() bool { return g.Status().Buffer.Events == 5 })
	url := "http://" + g.HTTPAddr().String() + "/"

	run := func(args ...string) []byte {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, browser, append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v", browser, args, err)
		}
		return out
	}
	dom := string(run("--dump-dom", url))
	for _, want := range []string{
		`<h1 id="gateway">edgegw gw1</h1>`,
		`<span class="dot err"></span>Uplink: down`,
		`<tr class="lane"><td>priority 0</td><td>5 events</td>`,
		`<tr class="source"><td><span class="dot ok"></span><b>mqtt</b>`,
		`id="clock"`,
		`id="per-reading"`, `id="card-life">about `, // the wear budget
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered DOM lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}

	shot := filepath.Join(t.TempDir(), "page.png")
	if keep := os.Getenv("EDGEGW_KEEP_SCREENSHOT"); keep != "" {
		shot = keep // to look at it
	}
	run("--screenshot="+shot, "--window-size=412,915", url)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot (chromium as root needs --no-sandbox, or it exits 0 and writes nothing): %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	if b.Dx() != 412 || b.Dy() != 915 {
		t.Fatalf("screenshot is %dx%d, want 412x915", b.Dx(), b.Dy())
	}
	inked := 0
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			if r < 0xc000 || g < 0xc000 || bl < 0xc000 {
				inked++
			}
		}
	}
	if total := (b.Dx() / 2) * (b.Dy() / 2); inked < total/100 {
		t.Fatalf("the screenshot is nearly blank: %d of %d sampled pixels have ink", inked, total)
	}
	t.Logf("screenshot %s: %dx%d, %d sampled pixels with ink", shot, b.Dx(), b.Dy(), inked)
}
