package buffer

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	berrors "go.etcd.io/bbolt/errors"
)

var (
	// ErrFull is returned by Append under the Reject policy when the events
	// would take the queue past MaxBytes. Nothing of that append is stored;
	// retry once the forwarder has drained some of the backlog.
	ErrFull = errors.New("buffer: full (max_bytes reached, when_full is reject)")
	// ErrTooLarge is returned by Append when one append alone is larger than
	// MaxBytes; it can never be stored.
	ErrTooLarge = errors.New("buffer: append larger than max_bytes")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("buffer: closed")
	// ErrLocked is returned by Open when another process holds the file.
	ErrLocked = errors.New("buffer: file is locked by another process")
	// ErrForeign is returned by Open for a valid bbolt file that is not an
	// edgegw buffer. It is left untouched.
	ErrForeign = errors.New("buffer: file is a bbolt database but not an edgegw buffer")
)

// CorruptError reports a buffer file that could not be used and was moved
// aside: Queue.Quarantine of the fresh queue Open returned instead.
type CorruptError struct {
	Path    string // the configured buffer path, now a fresh buffer
	MovedTo string // where the unusable file was moved
	Err     error  // why it was unusable
	// Salvaged is how many of its events were read back into the fresh
	// buffer (from every page that still read), in order.
	Salvaged int
	// Damaged is how many more read but failed their checksum: they are
	// in the dead-letter lane with the reason.
	Damaged int
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("buffer: %s was unusable (%v); moved it to %s and started a fresh buffer with the %d events that could be read from it and %d that failed their checksum in the dead-letter lane (the rest are lost; inspect or delete the moved file)", e.Path, e.Err, e.MovedTo, e.Salvaged, e.Damaged)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// errCorrupt marks errors that mean the file's contents are unusable.
var errCorrupt = errors.New("corrupt")

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errCorrupt}, args...)...)
}

func openError(path string, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("%w: %s (is another edgegw running with the same buffer.path?)", ErrLocked, path)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return corruptf("%v", err)
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("buffer: open %s: %w (check that the directory exists and is writable by this user)", path, err)
	}
	return fmt.Errorf("buffer: open %s: %w", path, err)
}

// writeError names the usual causes of a failed commit.
func writeError(path string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("buffer: commit to %s: disk full: %w (free space on the volume or lower buffer.max_bytes)", path, err)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("buffer: commit to %s: file system is read-only: %w", path, err)
	case errors.Is(err, syscall.EIO):
		return fmt.Errorf("buffer: commit to %s: I/O error, the storage may be failing: %w", path, err)
	}
	return fmt.Errorf("buffer: commit to %s: %w", path, err)
}
