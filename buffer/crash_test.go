package buffer_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/buffer"
)

const crashEnv = "EDGEGW_BUFFER_CRASH_CHILD"

// crashPayload is what the child stores for its i-th append of run r,
// element j.
func crashPayload(r, i, j int) []byte { return []byte(fmt.Sprintf("run%d-append%d-%d", r, i, j)) }

// TestCrashChild is the child of TestSIGKILLNeverLosesACommittedAppend: it
// appends from 4 goroutines until it is killed, printing each append that
// returned, and acks now and then.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("child process only")
	}
	var run int
	fmt.Sscan(os.Getenv(crashEnv+"_RUN"), &run)
	q, err := buffer.Open(path, nil)
	if err != nil {
		fmt.Printf("open-error %v\n", err)
		os.Exit(3)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				n := 1 + rand.IntN(20)
				data := make([][]byte, n)
				for j := range data {
					data[j] = crashPayload(run, g*1_000_000+i, j)
				}
				first, err := q.Append(context.Background(), data...)
				if err != nil {
					fmt.Printf("append-error %v\n", err)
					os.Exit(4)
				}
				mu.Lock()
				// One write(2) per line: a line on stdout means Append returned.
				os.Stdout.WriteString(fmt.Sprintf("ok %d %d %d\n", first, n, g*1_000_000+i))
				if first > 500 && rand.IntN(50) == 0 {
					ack := first - 1 - uint64(rand.IntN(200))
					if err := q.Ack(ack); err == nil {
						os.Stdout.WriteString(fmt.Sprintf("ack %d\n", ack))
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func TestSIGKILLNeverLosesACommittedAppend(t *testing.T) {
	if testing.Short() {
		t.Skip("re-execs the test binary 20 times")
	}
	path := filepath.Join(t.TempDir(), "buf.db")
	want := map[uint64][]byte{} // every event whose Append returned
	var acked uint64

	for run := range 20 {
		cmd := selfCommand("-test.run=^TestCrashChild$", "-test.v=false")
		cmd.Env = append(os.Environ(), crashEnv+"="+path, fmt.Sprintf("%s_RUN=%d", crashEnv, run))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1<<16)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		// Kill at a random moment once the child is appending.
		first, ok := <-lines
		if !ok {
			cmd.Wait()
			t.Fatalf("run %d: child printed nothing", run)
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()

		appends := 0
		for line := range chanWith(first, lines) {
			var s, n uint64
			var i int
			switch {
			case strings.HasPrefix(line, "ok "):
				if _, err := fmt.Sscanf(line, "ok %d %d %d", &s, &n, &i); err != nil {
					continue // the last line may be cut by the kill
				}
				for j := range n {
					want[s+j] = crashPayload(run, i, int(j))
				}
				appends++
			case strings.HasPrefix(line, "ack "):
				fmt.Sscanf(line, "ack %d", &s)
				acked = max(acked, s)
			default:
				t.Fatalf("run %d: child said %q", run, line)
			}
		}

		q, err := buffer.Open(path, nil)
		if err != nil {
			t.Fatalf("run %d: reopen after SIGKILL: %v", run, err)
		}
		recs := readAll(t, q, 0)
		got := make(map[uint64][]byte, len(recs))
		for k, r := range recs {
			if k > 0 && r.Seq != recs[k-1].Seq+1 {
				t.Fatalf("run %d: seq %d follows %d", run, r.Seq, recs[k-1].Seq)
			}
			got[r.Seq] = r.Data
		}
		lost := 0
		for seq, p := range want {
			if seq <= acked {
				delete(want, seq) // may or may not be deleted yet: both are fine
				continue
			}
			if g, ok := got[seq]; !ok || !bytes.Equal(g, p) {
				lost++
				if lost < 5 {
					t.Errorf("run %d: seq %d: got %q, want %q", run, seq, g, p)
				}
			}
		}
		if lost > 0 {
			t.Fatalf("run %d: %d committed events lost or changed", run, lost)
		}
		st := q.Stats()
		t.Logf("run %d: killed after %d appends; %d events held, next seq %d", run, appends, st.Events, st.NextSeq)
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// chanWith yields first and then the rest of c.
func chanWith(first string, c <-chan string) <-chan string {
	out := make(chan string, 1)
	go func() {
		defer close(out)
		out <- first
		for s := range c {
			out <- s
		}
	}()
	return out
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
