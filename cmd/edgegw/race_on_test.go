//go:build race

package main

// raceEnabled: the race detector's shadow memory multiplies a process's
// RSS, so memory bounds are measured without it.
const raceEnabled = true
