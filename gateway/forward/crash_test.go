package forward_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

const (
	childBuf  = "EDGEGW_FORWARD_CHILD_BUFFER"
	childURL  = "EDGEGW_FORWARD_CHILD_URL"
	childLive = "EDGEGW_FORWARD_CHILD_LIVE"
	childCA   = "EDGEGW_FORWARD_CHILD_CA" // set: over wss:// with compression, trusting this CA
)

// appendLive is the child's live source under live_first: 200 events, one
// every 2ms, alternately in priority 0 and priority 2, each the testEvent
// of its seq.
func appendLive(ctx context.Context, q *buffer.Queue) {
	for i := range 200 {
		l := buffer.Lane{Priority: 2 * (i % 2)}
		e := testEvent(int(q.Stats().NextSeq - 1))
		b, _ := e.Marshal(nil)
		if _, err := q.AppendEntries(ctx, []buffer.Entry{{Data: b, Lane: l}}); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// TestForwarderChild is the child of TestSIGKILLMidDrain: it forwards the
// buffer until it is empty, then exits 0, unless it is killed first.
func TestForwarderChild(t *testing.T) {
	path := os.Getenv(childBuf)
	if path == "" {
		t.Skip("child process only")
	}
	q, err := buffer.Open(path, nil)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(3)
	}
	nc, err := forward.Connect(forward.ConnOptions{Servers: []string{os.Getenv(childURL)}, CAFile: os.Getenv(childCA), Compression: os.Getenv(childCA) != ""}, nil)
	if err != nil {
		fmt.Println("connect:", err)
		os.Exit(3)
	}
	o := options()
	o.Stream.Create = false
	o.RateEvents = 15_000
	ctx, cancel := context.WithCancel(context.Background())
	live := make(chan struct{})
	if os.Getenv(childLive) != "" {
		o.Drain = forward.LiveFirst
		go func() { appendLive(ctx, q); close(live) }()
	} else {
		close(live)
	}
	f, err := forward.New(q, nc, o)
	if err != nil {
		fmt.Println("new:", err)
		os.Exit(3)
	}
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	for q.Stats().Events > 0 || !closed(live) {
		select {
		case err := <-done:
			fmt.Println("run:", err)
			os.Exit(4)
		case <-time.After(10 * time.Millisecond):
			q.Flush(ctx)
		}
	}
	cancel()
	<-done
	st := f.Stats()
	fmt.Printf("drained: acked %d skipped %d resent %d appended %d\n", st.Acked, st.Skipped, st.Resent, q.Stats().Appended)
	q.Close()
	os.Exit(0)
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestSIGKILLMidDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("re-execs the test binary")
	}
	tests := []struct {
		name       string
		duplicates time.Duration
		kills      int
		pause      time.Duration // between the kill and the restart
		live       bool          // live_first, with live events in two more lanes during each run
		wss        bool          // over wss:// with compression
	}{
		{"default duplicate window", 2 * time.Minute, 3, 0, false, false},
		// The restart comes after the duplicate window has passed: only the
		// read-back past the cursor on connect keeps the stream free of
		// duplicates.
		{"restart after the duplicate window", time.Second, 1, 3 * time.Second, false, false},
		// Acknowledged out of seq order: live events first, three lanes.
		{"live first", time.Second, 5, 1500 * time.Millisecond, true, false},
		// The metered link's uplink: WebSocket, TLS, per-message deflate.
		{"over wss with compression", 2 * time.Minute, 3, 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const n = 40_000
			srv := natstest.Start(t, nil)
			dial, ca := srv.URL(), ""
			if tt.wss {
				var mod func(*server.Options)
				mod, ca = natstest.WSS(t)
				srv.RestartWith(mod)
				dial = srv.WSURL()
			}
			nc, err := nats.Connect(srv.URL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			ctx := context.Background()
			stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
				Name: "TELEMETRY", Subjects: []string{"telemetry.>"},
				Storage: jetstream.FileStorage, Duplicates: tt.duplicates,
			})
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "buf.db")
			fillQueue(t, path, 0, n).Close()

			stored := func() uint64 {
				info, err := stream.Info(ctx)
				if err != nil {
					return 0
				}
				return info.State.Msgs
			}
			for k := 0; k <= tt.kills; k++ {
				cmd := selfCommand("-test.run=^TestForwarderChild$")
				cmd.Env = append(os.Environ(), childBuf+"="+path, childURL+"="+dial, childCA+"="+ca)
				if tt.live {
					cmd.Env = append(cmd.Env, childLive+"=1")
				}
				out := &lockedBuffer{}
				cmd.Stdout, cmd.Stderr = out, out
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				if k == tt.kills { // the last run drains to the end
					if err := cmd.Wait(); err != nil {
						t.Fatalf("final run: %v\n%s", err, out)
					}
					t.Logf("final run: %s", out)
					var acked, skipped, resent, appended uint64
					fmt.Sscanf(out.String()[strings.Index(out.String(), "drained:"):], "drained: acked %d skipped %d resent %d appended %d", &acked, &skipped, &resent, &appended)
					if skipped == 0 {
						t.Fatal("no event was found already in the stream on restart: the kill did not land between a store and its buffer ack, so this run proves nothing")
					}
					if tt.live {
						checkStreamOrder(t, srv.URL(), int(appended), false)
						checkOnceAndLaneOrder(t, streamMessages(t, srv.URL()), int(appended))
						return
					}
					break
				}
				target := uint64(n * (k + 1) / (tt.kills + 2))
				wait.For(t, "stored() >= target", func() bool { return stored() >= target })
				cmd.Process.Signal(syscall.SIGKILL)
				cmd.Wait()
				t.Logf("killed run %d with %d messages in the stream", k, stored())
				time.Sleep(tt.pause)
			}
			checkStream(t, srv.URL(), n)
		})
	}
}

// selfCommand re-executes this test binary. Under qemu-user without
// binfmt_misc (.ci/run's ARM runs) EDGEGW_TEST_EXEC names the emulator to
// run it with.
func selfCommand(args ...string) *exec.Cmd {
	if emu := os.Getenv("EDGEGW_TEST_EXEC"); emu != "" {
		return exec.Command(emu, append([]string{os.Args[0]}, args...)...)
	}
	return exec.Command(os.Args[0], args...)
}
