//go:build linux && (amd64 || arm64)

package powercuttest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// FS is a mounted forgetful file system.
type FS struct {
	// Dir is where it is mounted; Backing the real directory behind it.
	Dir, Backing string

	t      testing.TB
	server *fuse.Server

	mu    sync.Mutex
	cut   bool
	files map[uint64]*undo // by inode of the backing file
	syncs int              // fsyncs seen
}

// undo is what one backing file looked like at its last fsync: its size,
// and the bytes the writes since overwrote, in order.
type undo struct {
	path  string
	size  int64
	spans []span
}

type span struct {
	off  int64
	data []byte
}

// Mount mounts a forgetful file system over a fresh directory, or skips
// the test with the reason when the machine cannot mount FUSE.
func Mount(t testing.TB) *FS {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE on this machine (/dev/fuse: %v): the power-cut test cannot run", err)
	}
	f := &FS{t: t, Dir: t.TempDir(), Backing: t.TempDir(), files: map[uint64]*undo{}}
	if err := f.mount(); err != nil {
		t.Skipf("cannot mount FUSE here (%v): the power-cut test cannot run", err)
	}
	t.Cleanup(func() { f.server.Unmount() })
	return f
}

func (f *FS) mount() error {
	var st syscall.Stat_t
	if err := syscall.Stat(f.Backing, &st); err != nil {
		return err
	}
	root := &fs.LoopbackRoot{Path: f.Backing, Dev: uint64(st.Dev)}
	root.NewNode = func(r *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
		return &node{LoopbackNode: fs.LoopbackNode{RootData: r}, fs: f}
	}
	rootNode := root.NewNode(root, nil, "", &st)
	root.RootNode = rootNode
	zero := time.Duration(0)
	server, err := fs.Mount(f.Dir, rootNode, &fs.Options{
		MountOptions: fuse.MountOptions{DirectMount: true, FsName: "powercut", Name: "powercut"},
		// No attribute or entry caching: after a cut the kernel must see
		// the files as they are.
		AttrTimeout:  &zero,
		EntryTimeout: &zero,
	})
	if err != nil {
		return err
	}
	f.server = server
	return nil
}

// Cut cuts the power: from now on every write and fsync fails with EIO,
// and every file goes back to what its last fsync made durable. The
// caller kills the processes using it first or right after; Restore then
// brings the power back with a fresh mount (no page of the old one
// cached).
func (f *FS) Cut() (lostWrites int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut = true
	for ino, u := range f.files {
		file, err := os.OpenFile(u.path, os.O_RDWR, 0)
		if err != nil {
			f.t.Errorf("power cut: reopen %s: %v", u.path, err)
			continue
		}
		for i := len(u.spans) - 1; i >= 0; i-- {
			if _, err := file.WriteAt(u.spans[i].data, u.spans[i].off); err != nil {
				f.t.Errorf("power cut: undo a write to %s: %v", u.path, err)
			}
		}
		lostWrites += len(u.spans)
		if err := file.Truncate(u.size); err != nil {
			f.t.Errorf("power cut: truncate %s: %v", u.path, err)
		}
		file.Sync()
		file.Close()
		delete(f.files, ino)
	}
	return lostWrites
}

// Restore brings the power back: a fresh mount over the same files.
func (f *FS) Restore() {
	f.t.Helper()
	if err := f.server.Unmount(); err != nil {
		// A killed process may still hold it for a moment.
		time.Sleep(200 * time.Millisecond)
		if err := f.server.Unmount(); err != nil {
			f.t.Fatalf("unmount after a power cut: %v", err)
		}
	}
	f.mu.Lock()
	f.cut = false
	f.mu.Unlock()
	if err := f.mount(); err != nil {
		f.t.Fatalf("mount after a power cut: %v", err)
	}
}

// Syncs is how many fsyncs the file system has made durable.
func (f *FS) Syncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

// record keeps what a write of n bytes at off to the backing file p
// (inode ino) overwrites.
func (f *FS) record(ino uint64, p string, fd int, off int64, n int) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cut {
		return syscall.EIO
	}
	u := f.files[ino]
	if u == nil {
		u = &undo{path: p}
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			return fs.ToErrno(err)
		}
		u.size = st.Size // durable: nothing written since the last sync
		f.files[ino] = u
	}
	old := make([]byte, n)
	m, err := syscall.Pread(fd, old, off)
	if err != nil {
		return fs.ToErrno(err)
	}
	if m > 0 {
		u.spans = append(u.spans, span{off: off, data: old[:m]})
	}
	return 0
}

// synced marks the backing file durable as it is now: the next write
// starts a new record from its size then.
func (f *FS) synced(ino uint64) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cut {
		return syscall.EIO
	}
	f.syncs++
	delete(f.files, ino)
	return 0
}

// node is a loopback node whose files are forgetful.
type node struct {
	fs.LoopbackNode
	fs *FS
}

func (n *node) backing() string {
	return n.LoopbackNode.RootData.Path + "/" + n.Path(n.Root())
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, _, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return n.wrap(fh), 0, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ch, fh, _, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	child := ch.Operations().(*node)
	return ch, child.wrap(fh), 0, 0
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if ff, ok := fh.(*file); ok {
		return ff.Setattr(ctx, in, out)
	}
	if _, ok := in.GetSize(); ok {
		return syscall.EPERM // truncate by path: not something a buffer does
	}
	return n.LoopbackNode.Setattr(ctx, fh, in, out)
}

func (n *node) wrap(fh fs.FileHandle) *file {
	lf := fh.(*fs.LoopbackFile)
	return &file{lf: lf, n: n}
}

// file is a loopback file whose writes are recorded until synced. It
// does not embed LoopbackFile: its passthrough would let the kernel write
// around it.
type file struct {
	lf *fs.LoopbackFile
	n  *node
}

var (
	_ fs.FileReader    = (*file)(nil)
	_ fs.FileWriter    = (*file)(nil)
	_ fs.FileFsyncer   = (*file)(nil)
	_ fs.FileFlusher   = (*file)(nil)
	_ fs.FileReleaser  = (*file)(nil)
	_ fs.FileGetattrer = (*file)(nil)
	_ fs.FileSetattrer = (*file)(nil)
	_ fs.FileGetlker   = (*file)(nil)
	_ fs.FileSetlker   = (*file)(nil)
	_ fs.FileSetlkwer  = (*file)(nil)
)

func (f *file) fd() int { return fdOf(f.lf) }

func (f *file) ino() uint64 {
	var st syscall.Stat_t
	if syscall.Fstat(f.fd(), &st) != nil {
		return 0
	}
	return st.Ino
}

func (f *file) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return f.lf.Read(ctx, dest, off)
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if errno := f.n.fs.record(f.ino(), f.n.backing(), f.fd(), off, len(data)); errno != 0 {
		return 0, errno
	}
	return f.lf.Write(ctx, data, off)
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if errno := f.lf.Fsync(ctx, flags); errno != 0 {
		return errno
	}
	return f.n.fs.synced(f.ino())
}

func (f *file) Flush(ctx context.Context) syscall.Errno   { return f.lf.Flush(ctx) }
func (f *file) Release(ctx context.Context) syscall.Errno { return f.lf.Release(ctx) }
func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.lf.Getattr(ctx, out)
}

func (f *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if size, ok := in.GetSize(); ok {
		// A shrink overwrites the bytes cut off: keep them.
		var st syscall.Stat_t
		if err := syscall.Fstat(f.fd(), &st); err != nil {
			return fs.ToErrno(err)
		}
		if int64(size) < st.Size {
			if errno := f.n.fs.record(f.ino(), f.n.backing(), f.fd(), int64(size), int(st.Size-int64(size))); errno != 0 {
				return errno
			}
		} else if errno := f.n.fs.record(f.ino(), f.n.backing(), f.fd(), st.Size, 0); errno != 0 {
			return errno
		}
	}
	return f.lf.Setattr(ctx, in, out)
}

func (f *file) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return f.lf.Getlk(ctx, owner, lk, flags, out)
}

func (f *file) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.lf.Setlk(ctx, owner, lk, flags)
}

func (f *file) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.lf.Setlkw(ctx, owner, lk, flags)
}

// fdOf is the descriptor behind a LoopbackFile.
func fdOf(lf *fs.LoopbackFile) int {
	fd, ok := lf.PassthroughFd()
	if !ok {
		panic(fmt.Sprintf("powercuttest: no descriptor behind %T", lf))
	}
	return fd
}
