//go:build !linux

package buffer

func madviseDontNeed(addr, n uintptr) {}
