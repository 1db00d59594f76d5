package mqttbroker_test

import (
	"testing"

	"github.com/edgegw/edgegw/gateway/mqttbroker"
)

// A user's filter grants a subscription only when it matches every topic
// the subscription does: "+" never grants "#", "status/+" never grants
// "status/#".
func TestACLFilterCovers(t *testing.T) {
	for _, tc := range []struct {
		allowed, asked string
		want           bool
	}{
		{"#", "#", true},
		{"#", "a/+/c", true},
		{"+", "a", true},
		{"+", "+", true},
		{"+", "#", false},
		{"+", "a/b", false},
		{"status/+", "status/#", false},
		{"status/+", "status/+", true},
		{"status/+", "status/door", true},
		{"status/#", "status/+/x", true},
		{"status/#", "status", true},
		{"a/b", "a/+", false},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"#", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
	} {
		if got := mqttbroker.Covers(tc.allowed, tc.asked); got != tc.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", tc.allowed, tc.asked, got, tc.want)
		}
	}
}

func TestClientIDPatterns(t *testing.T) {
	u := &mqttbroker.User{Name: "dev1", ClientIDs: []string{"%u", "%u-*", "spare"}}
	for id, want := range map[string]bool{"dev1": true, "dev1-a": true, "dev1-": true, "spare": true, "dev2": false, "dev1x": false, "spare2": false} {
		if got := mqttbroker.ClientIDAllowed(u, id); got != want {
			t.Errorf("client id %q: %v, want %v", id, got, want)
		}
	}
}

// FuzzCovers: a filter that covers another matches every topic the other
// matches (checked on the topic made by filling its wildcards).
func FuzzCovers(f *testing.F) {
	f.Add("a/+/#", "a/b/c/d")
	f.Add("+", "#")
	f.Fuzz(func(t *testing.T, allowed, asked string) {
		if mqttbroker.Covers(allowed, asked) && !mqttbroker.Covers(allowed, fill(asked)) {
			t.Fatalf("%q covers %q but not %q", allowed, asked, fill(asked))
		}
	})
}

// fill replaces the wildcards of a filter with a level.
func fill(f string) string {
	out := []byte{}
	for i := 0; i < len(f); i++ {
		switch f[i] {
		case '+', '#':
			out = append(out, 'x')
		default:
			out = append(out, f[i])
		}
	}
	return string(out)
}
