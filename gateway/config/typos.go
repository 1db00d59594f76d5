package config

// Typos and unknown keys: what a key was probably meant to be.

import (
	"fmt"
	"reflect"
	"strings"
)

// mergeTypos folds "missing" problems into an unknown key next to them
// whose name is a typo of the missing one: one problem, the right fix.
func mergeTypos(ps []Problem) []Problem {
	var out []Problem
	used := map[int]bool{}
	for i, p := range ps {
		if !strings.HasPrefix(p.Msg, "missing") {
			continue
		}
		dir, name := splitPath(p.Path)
		for j, u := range ps {
			if !strings.HasPrefix(u.Msg, "unknown key") {
				continue
			}
			if udir, uname := splitPath(u.Path); udir == dir && closeTo(uname, name) {
				ps[j].Msg = fmt.Sprintf("unknown key; did you mean %s?", name)
				used[i] = true
			}
		}
	}
	for i, p := range ps {
		if !used[i] {
			out = append(out, p)
		}
	}
	return out
}

func splitPath(p string) (dir, name string) {
	if i := strings.LastIndex(p, "."); i >= 0 {
		return p[:i], p[i+1:]
	}
	return "", p
}

// closeTo: an edit distance of at most 2.
func closeTo(a, b string) bool {
	return a != b && distance(a, b) <= 2
}

// distance is the edit distance of a and b, or 3 when it is more than 2.
func distance(a, b string) int {
	if abs(len(a)-len(b)) > 2 {
		return 3
	}
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return min(prev[len(b)], 3)
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// unknownKey says what to do about a key that t does not have: the key it
// is closest to, or the keys there are.
func unknownKey(t reflect.Type, key string) string {
	keys := keysOf(t)
	best, bestD := "", 3
	for _, k := range keys {
		if d := distance(strings.ToLower(key), k); d < bestD || (d == bestD && best == "") {
			best, bestD = k, d
		}
	}
	if best != "" && bestD <= 2 {
		return fmt.Sprintf("unknown key; did you mean %s?", best)
	}
	for _, k := range keys {
		if len(key) >= 3 && (strings.HasPrefix(k, key) || strings.HasPrefix(key, k)) {
			return fmt.Sprintf("unknown key; did you mean %s?", k)
		}
	}
	return fmt.Sprintf("unknown key; the keys here are %s (docs/config.md)", strings.Join(keys, ", "))
}

// keysOf lists the YAML keys of struct t, those of inlined structs too.
func keysOf(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")
		switch {
		case len(tag) > 1 && tag[1] == "inline" && t.Field(i).Type.Kind() == reflect.Struct:
			keys = append(keys, keysOf(t.Field(i).Type)...)
		case tag[0] != "" && tag[0] != "-":
			keys = append(keys, tag[0])
		}
	}
	return keys
}
