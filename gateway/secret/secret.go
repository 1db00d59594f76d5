// Package secret keeps credentials out of what edgegw prints: logs, errors,
// /status and config check's effective config.
package secret

import (
	"net/url"
	"strings"
)

// URL returns s without the password of its user info
// (nats://edge:pw@hub:4222 → nats://edge:xxxxx@hub:4222). A string that
// does not parse as a URL (a raw '%' in a password) loses everything
// between "://" and the last '@' instead, so a malformed URL never leaks
// either.
func URL(s string) string {
	u, err := url.Parse(s)
	if err == nil && u.Opaque != "" {
		if at := strings.LastIndex(u.Opaque, "@"); at >= 0 {
			return u.Scheme + ":xxxxx" + u.Opaque[at:]
		}
		return s
	}
	if err == nil {
		if u.User == nil {
			return s
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		return u.String()
	}
	scheme, rest, ok := strings.Cut(s, "://")
	at := strings.LastIndex(rest, "@")
	if !ok || at < 0 {
		if at = strings.LastIndex(s, "@"); at >= 0 {
			return "xxxxx" + s[at:]
		}
		return s
	}
	return scheme + "://xxxxx" + rest[at:]
}

// URLs is URL of each, joined with commas.
func URLs(ss []string) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = URL(s)
	}
	return strings.Join(out, ",")
}

// Mask is what a set secret is shown as.
func Mask(s string) string {
	if s == "" {
		return ""
	}
	return "(set)"
}
