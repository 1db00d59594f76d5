package secret_test

import (
	"strings"
	"testing"

	"github.com/edgegw/edgegw/gateway/secret"
)

func TestURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"nats://hub:4222", "nats://hub:4222"},
		{"nats://edge:pw@hub:4222", "nats://edge:xxxxx@hub:4222"},
		{"tcp://user@broker:1883", "tcp://user@broker:1883"},
		{"tcp://user:p%ss@broker:1883", "tcp://xxxxx@broker:1883"}, // does not parse
		{"tcp://u:a@b@broker:1883", "tcp://u:xxxxx@broker:1883"},
		{"user:p%ss@broker", "user:xxxxx@broker"},
	} {
		if got := secret.URL(tt.in); got != tt.want {
			t.Errorf("URL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := secret.URLs([]string{"nats://a:pw1@h1", "nats://b:pw2@h2"}); strings.Contains(got, "pw") {
		t.Errorf("URLs leaks: %q", got)
	}
}

func FuzzURL(f *testing.F) {
	f.Add("nats://edge:pw@hub:4222")
	f.Add("tcp://u:p%zz@h")
	f.Fuzz(func(t *testing.T, pw string) {
		if len(pw) < 4 || strings.ContainsAny(pw, "@/?#") || strings.Trim(pw, "x") == "" {
			return
		}
		for _, s := range []string{"nats://edge:" + pw + "@hub:4222", "tcp://edge:" + pw + "@broker"} {
			// The password may also spell part of the rest ("nats").
			rest := strings.Count(strings.Replace(s, pw, "", 1), pw)
			if got := secret.URL(s); strings.Count(got, pw) > rest {
				t.Fatalf("URL(%q) = %q shows the password", s, got)
			}
		}
	})
}
