package buffer

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// verify checks an existing file before it is opened for writing, through a
// read-only handle.
//
// It always checks that the file is as long as its meta page says (a
// truncated file would otherwise fault deep inside bbolt), and every page
// bbolt will walk (pages.go). After an unclean
// shutdown, or with VerifyOnOpen, it also walks every event and runs bbolt's
// page check. Faults and panics while reading are turned into errors, so a
// bad file is moved aside instead of crashing the process in a loop.
func verify(path string, o Options) (err error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("buffer: %w", err)
	}
	if fi.Size() == 0 {
		return nil // bbolt initialises an empty file
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		ReadOnly:     true,
		Timeout:      o.LockTimeout,
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		if oe := openError(path, err); errors.Is(oe, ErrLocked) || errors.Is(oe, errCorrupt) {
			return oe
		}
		var pe *os.PathError
		if errors.As(err, &pe) {
			return openError(path, err)
		}
		// bbolt returns plain errors for some damage ("file size too small").
		return corruptf("%v", err)
	}
	defer db.Close()
	// Every page bbolt's read-write open will walk, checked here first:
	// it would panic in a goroutine of its own on a damaged one.
	if err := checkPages(path, db.Info().PageSize); err != nil {
		return err
	}

	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = corruptf("reading it failed: %v", r)
		}
	}()
	err = db.View(func(tx *bolt.Tx) error {
		if tx.Size() > fi.Size() {
			return corruptf("the file is %d bytes but its pages reach %d: it was truncated", fi.Size(), tx.Size())
		}
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return nil // foreign or empty: open decides
		}
		if clean := getUint(meta, keyClean) == 1; clean && !o.VerifyOnOpen {
			return nil
		}
		return walk(tx)
	})
	return err
}

// walk runs bbolt's own consistency check. The events themselves (keys,
// seqs in a row and below next_seq, bytes against the meta bucket) were
// checked with every page by checkPages, on every open.
func walk(tx *bolt.Tx) error {
	var first error
	for err := range tx.Check() { // drain it all: the checker is a goroutine
		if first == nil {
			first = corruptf("bbolt check: %v", err)
		}
	}
	return first
}
