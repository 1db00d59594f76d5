package gateway_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// A buffer of 20,000 events, stopped cleanly and damaged as a failing SD
// card does (the reproduction: 0xffff in the element count of
// page 3, then 50 random bytes past page 4). One damaged event used to
// stop the whole uplink for good (a salvaged subject read
// "tele\xa4etry…", which the stream does not capture). Now every event
// carries a checksum: the damaged ones are dead letters with the reason,
// every salvaged one whose checksum holds is in the stream once, and 20
// readings published after the restart arrive within 10 s.
func TestDamagedBufferDoesNotStopTheUplink(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")

	const n = 20_000
	q, err := buffer.Open(cfg.Buffer.Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var data [][]byte
	for i := range n {
		e := event.Event{Subject: fmt.Sprintf("telemetry.gw1.old.d%d.temp", i%4), Source: "old/d0/temp",
			Time: time.Now(), Payload: fmt.Appendf(nil, "old-%05d", i)}
		b, err := e.Marshal(nil)
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, b)
	}
	for len(data) > 0 {
		k := min(len(data), 1000)
		if _, err := q.Append(context.Background(), data[:k]...); err != nil {
			t.Fatal(err)
		}
		data = data[k:]
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cfg.Buffer.Path)
	if err != nil {
		t.Fatal(err)
	}
	const psz = 16 << 10
	b[3*psz+10], b[3*psz+11] = 0xff, 0xff
	r := rand.New(rand.NewPCG(22, 1))
	for range 50 {
		b[4*psz+r.IntN(len(b)-4*psz)] ^= byte(1 + r.IntN(255))
	}
	if err := os.WriteFile(cfg.Buffer.Path, b, 0o600); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	g := startGateway(t, cfg)
	pub := newPublisher(t, broker.URL(), "pub", true)
	pub.publish(0, 20, 20, 0)
	// What salvage kept and what failed its checksum is on record.
	st := g.Status()
	var salvaged, damaged int
	if _, err := fmt.Sscanf(st.Buffer.LastQuarantine[strings.LastIndex(st.Buffer.LastQuarantine, "; ")+2:], "%d events salvaged, %d failed their checksum", &salvaged, &damaged); err != nil {
		t.Fatalf("quarantine note %q: %v", st.Buffer.LastQuarantine, err)
	}
	t.Logf("salvaged %d of %d, %d failed their checksum", salvaged, n, damaged)
	if damaged == 0 || salvaged < n-1000 {
		t.Fatalf("the damage did not reach what the test is about: %d salvaged, %d damaged", salvaged, damaged)
	}
	wait.Within(t, 10*time.Second-time.Since(start), "the 20 new readings in the stream within 10 s of the restart", func() bool {
		c, err := subjectCount(srv.URL(), "telemetry.gw1.sensors.>")
		return err == nil && c == 20
	})
	t.Logf("20 new readings in the stream %v after the restart", time.Since(start).Round(time.Millisecond))
	wait.For(t, "the salvaged backlog in the stream", func() bool {
		return g.Stats().Forward.Acked == uint64(salvaged+20)
	})
	seen := map[string]int{}
	for _, m := range natstest.Messages(t, srv.URL()) {
		seen[string(m.Data())]++
	}
	old := 0
	for p, c := range seen {
		if c != 1 {
			t.Errorf("%q is in the stream %d times", p, c)
		}
		if strings.HasPrefix(p, "old-") {
			old++
		}
	}
	if old != salvaged {
		t.Fatalf("%d salvaged events in the stream, want %d", old, salvaged)
	}
	if st := g.Status().Buffer; st.DeadLetters != uint64(damaged) {
		t.Fatalf("%d dead letters, want the %d damaged", st.DeadLetters, damaged)
	}
	dead, err := g.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dead {
		if !strings.HasPrefix(d.Reason, "checksum: ") {
			t.Fatalf("dead letter %d: reason %q", d.ID, d.Reason)
		}
	}
}
