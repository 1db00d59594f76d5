package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
)

// bufferPath is the buffer file a command names with --path, or the one
// its config names (read offline: no secrets needed).
func bufferPath(cf configFlags, path string) (string, error) {
	if path != "" {
		return path, nil
	}
	cfg, err := cf.load(true)
	if err != nil {
		return "", err
	}
	return cfg.Buffer.Path, nil
}

// parseBufferFlags parses a buffer command's flags and sets *path to the
// buffer file; non-zero is the exit code of a failure, said on stderr.
func parseBufferFlags(fs *flag.FlagSet, args []string, cf configFlags, path *string, stderr io.Writer) int {
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	if *path, err = bufferPath(cf, *path); err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	return 0
}

func cmdBufferStats(args []string, stdout, stderr io.Writer) int {
	fs := flags("buffer stats", stderr)
	cf := addConfigFlags(fs, defaultConfig)
	path := fs.String("path", "", "buffer file (instead of the config's buffer.path)")
	if code := parseBufferFlags(fs, args, cf, path, stderr); code != 0 {
		return code
	}
	st, err := buffer.ReadStats(*path, time.Second)
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	oldest := "-"
	if !st.Oldest.IsZero() {
		oldest = fmt.Sprintf("%s (%s ago)", st.Oldest.UTC().Format(time.RFC3339), st.OldestAge.Round(time.Second))
	}
	seqs := fmt.Sprintf("%d .. %d", st.FirstSeq, st.NextSeq-1)
	if st.Events == 0 {
		seqs = fmt.Sprintf("- (empty; the next event is seq %d)", st.NextSeq)
	}
	fmt.Fprintf(stdout, "buffer:          %s\nfile size:       %d bytes\nevents held:     %d\nbytes held:      %d\noldest event:    %s\nseq range:       %s\nappended total:  %d (the file's life)\nacked total:     %d (the file's life)\ndropped (full):  %d\ndropped (age):   %d\n",
		*path, st.FileBytes, st.Events, st.Bytes, oldest, seqs, st.Appended, st.Acked, st.DroppedFull, st.DroppedAge)
	fmt.Fprintf(stdout, "dropped (ttl):   %d\n", st.DroppedTTL)
	if len(st.Lanes) > 0 {
		fmt.Fprintf(stdout, "lanes:\n  %-8s %-8s %10s %12s %14s %10s %10s %10s %10s\n", "priority", "ttl", "events", "bytes", "oldest age", "acked", "drop:full", "drop:age", "drop:ttl")
		for _, l := range st.Lanes {
			ttl, age := "-", "-"
			if l.TTL > 0 {
				ttl = l.TTL.String()
			}
			if l.Events > 0 {
				age = l.OldestAge.Round(time.Second).String()
			}
			fmt.Fprintf(stdout, "  %-8d %-8s %10d %12d %14s %10d %10d %10d %10d\n", l.Priority, ttl, l.Events, l.Bytes, age, l.Acked, l.DroppedFull, l.DroppedAge, l.DroppedTTL)
		}
	}
	fmt.Fprintf(stdout, "dead letters:    %d (%d bytes; %d set aside in all, %d dropped at the lane's bound)\n", st.DeadEvents, st.DeadBytes, st.DeadTotal, st.DeadDropped)
	if st.DeadEvents > 0 {
		fmt.Fprintf(stdout, "                 list, export or drop them: edgegw buffer dead-letters --path %s\n", *path)
	}
	if st.Quarantined > 0 {
		fmt.Fprintf(stdout, "quarantined:     %d damaged file(s); last: %s\n", st.Quarantined, st.LastQuarantine)
	}
	return 0
}

// deadLetterJSON is one line of an export: the event decoded where it
// still decodes, its bytes in any case.
type deadLetterJSON struct {
	ID       uint64    `json:"id"`
	Seq      uint64    `json:"seq,omitempty"`
	SetAside time.Time `json:"set_aside"`
	Reason   string    `json:"reason"`
	Size     int       `json:"size"`
	Subject  string    `json:"subject,omitempty"`
	Source   string    `json:"source,omitempty"`
	Time     time.Time `json:"time,omitzero"`
	Payload  []byte    `json:"payload,omitempty"` // base64
	Raw      []byte    `json:"raw,omitempty"`     // the stored bytes, when they do not decode
}

// cmdDeadLetters lists the events set aside in the buffer's dead-letter
// lane; --export writes them as JSON lines, --drop deletes them. The
// gateway must be stopped (the file is locked while it runs).
func cmdDeadLetters(args []string, stdout, stderr io.Writer) int {
	fs := flags("buffer dead-letters", stderr)
	cf := addConfigFlags(fs, defaultConfig)
	path := fs.String("path", "", "buffer file (instead of the config's buffer.path)")
	export := fs.String("export", "", "write every dead letter to this file as JSON lines")
	drop := fs.Bool("drop", false, "delete the dead letters listed (export them first)")
	if code := parseBufferFlags(fs, args, cf, path, stderr); code != 0 {
		return code
	}
	dead, err := buffer.ReadDeadLetters(*path, time.Second)
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	for _, d := range dead {
		fmt.Fprintf(stdout, "%6d  seq %-20d %s  %8d bytes  %s\n", d.ID, d.Seq, d.Time.UTC().Format(time.RFC3339), d.Size, d.Reason)
	}
	fmt.Fprintf(stdout, "%d dead letter(s) in %s\n", len(dead), *path)
	if *export != "" {
		if err := writeDeadLetters(*export, dead); err != nil {
			fmt.Fprintln(stderr, "edgegw:", err)
			return 1
		}
		fmt.Fprintf(stdout, "exported to %s\n", *export)
	}
	if *drop && len(dead) > 0 {
		q, err := buffer.Open(*path, &buffer.Options{LockTimeout: time.Second})
		if err != nil {
			fmt.Fprintln(stderr, "edgegw:", err)
			return 1
		}
		n, err := q.DropDead(context.Background(), dead[len(dead)-1].ID)
		if cerr := q.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			fmt.Fprintln(stderr, "edgegw:", err)
			return 1
		}
		fmt.Fprintf(stdout, "dropped %d\n", n)
	}
	return 0
}

func writeDeadLetters(name string, dead []buffer.DeadLetter) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, d := range dead {
		j := deadLetterJSON{ID: d.ID, Seq: d.Seq, SetAside: d.Time.UTC(), Reason: d.Reason, Size: d.Size}
		var e event.Event
		if err := e.Unmarshal(d.Data); err == nil {
			j.Subject, j.Source, j.Time, j.Payload = e.Subject, e.Source, e.Time, e.Payload
		} else {
			j.Raw = d.Data
		}
		if err := enc.Encode(j); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
