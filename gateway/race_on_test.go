//go:build race

package gateway_test

// raceEnabled: the race detector slows bcrypt and the rest tenfold, so
// time bounds are not asserted under it.
const raceEnabled = true
