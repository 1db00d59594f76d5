// Package powercuttest mounts a FUSE file system for tests that forgets,
// when the power is "cut", every write not yet made durable by an fsync,
// as a disk without power-loss protection does (Jepsen's LazyFS does the
// same). It is a loopback of a real directory: writes go through to it,
// and each write not yet synced keeps what it overwrote, so Cut can put
// every file back as it was at its last fsync.
//
// It needs /dev/fuse and the right to mount (root, as on CI). Tests call
// Mount and skip, saying why, where the machine cannot.
//
// go-fuse does not build for 32-bit ARM (its splice code assumes a 64-bit
// return), so the package is empty there: the power-cut tests run on the
// 64-bit machines CI uses.
package powercuttest
