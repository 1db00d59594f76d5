// Package wait is the tests' one way to wait for a fact: a condition polled
// until it holds, or the test fails with what it was waiting for. Tests wait
// for facts (a count in the stream, a listener, a counter), never for time.
package wait

import (
	"testing"
	"time"
)

// Limit is how long For waits before it fails the test. It is generous on
// purpose: a busy 2-core machine is slow, and a fact that holds comes sooner.
const Limit = 2 * time.Minute

// For polls cond until it is true, and fails the test naming what after Limit.
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Limit, what, cond)
}

// Within is For with a limit of its own, for the few checks whose limit is
// the target being tested ("the readings are upstream within 2 s").
func Within(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
