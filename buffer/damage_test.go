package buffer_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/buffer"
)

// checkSalvaged checks that the fresh queue Open returned with ce holds the
// events salvaged from the damaged file, and that each is one that fill
// wrote, in the order it wrote them; and that the quarantine is on record.
func checkSalvaged(t *testing.T, q *buffer.Queue, ce *buffer.CorruptError) {
	t.Helper()
	recs := readAll(t, q, 0)
	if len(recs) != ce.Salvaged {
		t.Fatalf("fresh queue holds %d events, CorruptError says %d salvaged", len(recs), ce.Salvaged)
	}
	// Every event carries a checksum: what was salvaged is exactly what
	// fill wrote, in its order; what was damaged is a dead letter.
	last := -1
	for _, r := range recs {
		var i int
		if _, err := fmtSscan(string(r.Data), &i); err != nil || !bytes.Equal(r.Data, payload(i)) || r.Damaged != nil {
			t.Fatalf("salvaged seq %d reads %q (damaged: %v): a damaged event passed its checksum", r.Seq, r.Data, r.Damaged)
		}
		if i <= last {
			t.Fatalf("salvaged event %d after %d: out of order", i, last)
		}
		last = i
	}
	dead, err := q.DeadLetters(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != ce.Damaged {
		t.Fatalf("%d dead letters, CorruptError says %d damaged", len(dead), ce.Damaged)
	}
	for _, d := range dead {
		if !strings.HasPrefix(d.Reason, "checksum: ") {
			t.Fatalf("dead letter reason %q does not start with checksum", d.Reason)
		}
	}
	t.Logf("salvaged %d events, %d failed their checksum", len(recs), len(dead))
	st := q.Stats()
	if st.Quarantined != 1 || !strings.Contains(st.LastQuarantine, ce.MovedTo) {
		t.Fatalf("quarantine not on record: %d, %q", st.Quarantined, st.LastQuarantine)
	}
}

func fmtSscan(s string, i *int) (int, error) {
	n, ok := strings.CutPrefix(s, "event-")
	if !ok {
		return 0, errors.New("no prefix")
	}
	v := 0
	for _, c := range n {
		if c < '0' || c > '9' {
			return 0, errors.New("not a number")
		}
		v = v*10 + int(c-'0')
	}
	*i = v
	return 1, nil
}

// Pages damaged at rest after a clean shutdown (bit rot on an SD card)
// made bbolt panic in a goroutine of its own while it rebuilt its
// freelist: a crash on every start. Now the file is moved aside, the
// events that still read are salvaged into the fresh one, and the
// quarantine is on record; or, where the damage hit nothing bbolt walks,
// the file opens and reads without a crash.
func TestDamagedPagesNeverCrashOpen(t *testing.T) {
	good := filepath.Join(t.TempDir(), "good.db")
	fill(t, good, 20000)
	orig, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	const psz = 16 << 10
	type damage struct {
		name  string
		spoil func([]byte)
	}
	cases := []damage{
		// The reproduction: a page's element count set to 65535.
		{"count of page 3", func(b []byte) { b[3*psz+10], b[3*psz+11] = 0xff, 0xff }},
		{"type of page 3", func(b []byte) { b[3*psz+8] = 0x10 }},
		{"id of page 2", func(b []byte) { b[2*psz] ^= 0x40 }},
	}
	for seed := range 25 {
		r := rand.New(rand.NewPCG(uint64(seed), 7))
		cases = append(cases, damage{"50 random bytes", func(b []byte) {
			for range 50 {
				b[2*psz+r.IntN(len(b)-2*psz)] ^= byte(1 + r.IntN(255))
			}
		}})
	}
	moved := 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "buf.db")
			b := bytes.Clone(orig)
			c.spoil(b)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			q, err := buffer.Open(path, nil)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			switch ce := q.Quarantine(); {
			case ce != nil:
				moved++
				checkSalvaged(t, q, ce)
			default:
				// Damage only where bbolt does not look (free pages,
				// event payloads): it opens; every event reads.
				readAll(t, q, 0)
			}
			if _, err := q.Append(context.Background(), []byte("after")); err != nil {
				t.Fatalf("append after open: %v", err)
			}
			st := q.Stats()
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			q2, err := buffer.Open(path, nil)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			defer q2.Close()
			if q2.Stats().Events != st.Events || q2.Stats().Quarantined != st.Quarantined {
				t.Fatalf("reopen: %+v, was %+v", q2.Stats(), st)
			}
		})
	}
	if moved < 3 {
		t.Fatalf("only %d of %d damaged files were moved aside", moved, len(cases))
	}
}
