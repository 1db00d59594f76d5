package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// cmdFleetCall is edgegw fleet call: one gateway's command endpoint.
func cmdFleetCall(args []string, stdout, stderr io.Writer) int {
	fs := flags("fleet call", stderr)
	ff := addFleetFlags(fs)
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the answer")
	pos, ok := positional(fs, args, 2, stderr)
	if !ok {
		return 2
	}
	if _, err := keyFor(pos[0]); err != nil || pos[0] == "defaults" {
		fmt.Fprintf(stderr, "edgegw: %q is not a gateway id\n", pos[0])
		return 2
	}
	var body []byte
	if len(pos) > 2 {
		body = []byte(pos[2])
		if !json.Valid(body) {
			fmt.Fprintf(stderr, "edgegw: the request %q is not JSON, e.g. '{\"sensor\":\"room\"}'\n", pos[2])
			return 2
		}
	}
	nc, err := ff.connect()
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	defer nc.Close()
	subj := "edgegw." + pos[0] + "." + pos[1]
	m, err := nc.Request(subj, body, *timeout)
	if errors.Is(err, nats.ErrNoResponders) {
		fmt.Fprintf(stderr, "edgegw: nobody answers %s: gateway %s is offline, or has no endpoint %s\n", subj, pos[0], pos[1])
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "edgegw: %s: %v\n", subj, err)
		return 1
	}
	if code := m.Header.Get("Nats-Service-Error-Code"); code != "" {
		fmt.Fprintf(stderr, "edgegw: %s: %s %s\n", subj, code, m.Header.Get("Nats-Service-Error"))
		return 1
	}
	printReply(stdout, m.Data)
	return 0
}

// printReply writes an endpoint's answer for a person: JSON indented, and
// a text of many lines in it (the config endpoint's YAML) as itself, after
// the rest, not as one escaped string.
func printReply(w io.Writer, data []byte) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) != nil {
		var out bytes.Buffer
		if json.Indent(&out, data, "", "  ") != nil {
			w.Write(data)
			return
		}
		fmt.Fprintln(w, out.String())
		return
	}
	texts := map[string]string{}
	for k, v := range fields {
		var s string
		if json.Unmarshal(v, &s) == nil && strings.Contains(s, "\n") {
			texts[k] = s
			delete(fields, k)
		}
	}
	out, _ := json.MarshalIndent(fields, "", "  ")
	fmt.Fprintln(w, string(out))
	for _, k := range slices.Sorted(maps.Keys(texts)) {
		fmt.Fprintf(w, "\n%s:\n%s", k, texts[k])
		if !strings.HasSuffix(texts[k], "\n") {
			fmt.Fprintln(w)
		}
	}
}
