package buffer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// The page walker reads a bbolt file through ReadAt, never through bbolt,
// and checks every page that bbolt's read-write open will touch. bbolt
// opened with NoFreelistSync rebuilds its freelist by walking every page
// in a goroutine of its own, and panics there on a damaged one ("freepages:
// failed to get all reachable pages", "page 3: has unexpected type", slice
// bounds out of range): no recover can catch that, and the service would
// crash on every start. So the same invariants are checked here first, in
// the caller's goroutine, and a file that breaks one is moved aside.
//
// The same walker, told to salvage, collects the events of every leaf
// page that still reads, skipping damaged subtrees.
//
// The layout is bbolt's (go.etcd.io/bbolt/internal/common), in the
// machine's byte order, which is little-endian on every platform edgegw
// ships for.

const (
	pageHeaderSize = 16 // id u64, flags u16, count u16, overflow u32
	elemSize       = 16 // branch: pos, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	metaSize       = 64

	flagBranch   = 0x01
	flagLeaf     = 0x02
	flagFreelist = 0x10

	bucketLeafFlag = 0x01
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	noFreelist     = ^uint64(0)
)

var le = binary.LittleEndian

type pageWalker struct {
	lanes    map[string]Lane // bucket names parsed; absent: not a lane
	r        io.ReaderAt
	psz      int
	hwm      uint64 // pages below this are in use
	seen     []bool // pages reached
	bufs     [][]byte
	depth    int
	salvage  bool
	firstErr error

	// What the walk found in the buffer's buckets.
	events     []Record // salvage only
	values     []Record // salvage only: lane events whose Data is the whole stored value
	lastSeq    uint64
	haveSeq    bool
	evBytes    int64
	nextSeq    uint64 // meta next_seq, when readable
	bytes      int64  // meta bytes
	summedFrom uint64 // meta summed_from, when readable
	haveSummed bool
}

// checkPages returns a corrupt error for damage that would make bbolt
// panic on a read-write open of the file at path, whose page size is psz.
func checkPages(path string, psz int) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("buffer: %w", err)
	}
	defer f.Close()
	w := &pageWalker{r: f, psz: psz}
	return w.run()
}

// pageSizeOf reads the page size from the first meta page, 0 if it does
// not validate.
func pageSizeOf(r io.ReaderAt) int {
	buf := make([]byte, pageHeaderSize+metaSize)
	if _, err := r.ReadAt(buf, 0); err != nil {
		return 0
	}
	m := buf[pageHeaderSize:]
	if !validMeta(m) {
		return 0
	}
	return int(le.Uint32(m[8:]))
}

func validMeta(m []byte) bool {
	if len(m) < metaSize || le.Uint32(m[0:]) != boltMagic || le.Uint32(m[4:]) != boltVersion {
		return false
	}
	h := fnv.New64a()
	h.Write(m[:56])
	return h.Sum64() == le.Uint64(m[56:])
}

func (w *pageWalker) fail(format string, args ...any) error {
	err := corruptf(format, args...)
	if w.firstErr == nil {
		w.firstErr = err
	}
	return err
}

// run picks the meta page bbolt would pick and walks the tree from its
// root bucket.
func (w *pageWalker) run() error {
	var metas [][]byte
	for i := range 2 {
		buf := make([]byte, pageHeaderSize+metaSize)
		if _, err := w.r.ReadAt(buf, int64(i*w.psz)); err != nil {
			continue
		}
		metas = append(metas, buf[pageHeaderSize:])
	}
	if len(metas) == 2 && le.Uint64(metas[1][48:]) > le.Uint64(metas[0][48:]) {
		metas[0], metas[1] = metas[1], metas[0]
	}
	var meta []byte
	for _, m := range metas {
		if validMeta(m) {
			meta = m
			break
		}
	}
	if meta == nil {
		return w.fail("no valid meta page")
	}
	if int(le.Uint32(meta[8:])) != w.psz {
		return w.fail("meta page size %d, file opened with %d", le.Uint32(meta[8:]), w.psz)
	}
	w.hwm = le.Uint64(meta[40:])
	if w.hwm < 2 || w.hwm > 1<<40/uint64(w.psz) {
		return w.fail("meta page count %d out of range", w.hwm)
	}
	w.seen = make([]bool, w.hwm)
	w.seen[0], w.seen[1] = true, true
	if fl := le.Uint64(meta[32:]); fl != noFreelist {
		p, err := w.page(fl)
		if err != nil {
			return err
		}
		if le.Uint16(p[8:]) != flagFreelist {
			return w.fail("page %d: freelist page has flags %#x", fl, le.Uint16(p[8:]))
		}
	}
	root := le.Uint64(meta[16:])
	if err := w.bucket(root, nil, ""); err != nil {
		return err
	}
	if w.firstErr != nil {
		return w.firstErr
	}
	// The events against the buffer's meta bucket (a foreign file has
	// neither: open decides about it).
	if w.haveSeq && w.lastSeq >= w.nextSeq {
		return w.fail("last event seq %d is not below next seq %d", w.lastSeq, w.nextSeq)
	}
	if w.nextSeq != 0 && w.evBytes != w.bytes {
		return w.fail("events hold %d bytes, meta says %d", w.evBytes, w.bytes)
	}
	return nil
}

// page reads page id with its overflow, checking that it is in use, not
// reached before, and says it is page id.
func (w *pageWalker) page(id uint64) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, w.fail("page %d: out of bounds (%d pages in use)", id, w.hwm)
	}
	// One buffer per depth of the tree (tree sets it): a leaf's is reused
	// by the next.
	for len(w.bufs) <= w.depth {
		w.bufs = append(w.bufs, make([]byte, w.psz))
	}
	buf := w.bufs[w.depth][:w.psz]
	if _, err := w.r.ReadAt(buf, int64(id)*int64(w.psz)); err != nil {
		return nil, w.fail("page %d: %v", id, err)
	}
	if got := le.Uint64(buf); got != id {
		return nil, w.fail("page %d: header says page %d", id, got)
	}
	over := uint64(le.Uint32(buf[12:]))
	if id+over >= w.hwm {
		return nil, w.fail("page %d: %d overflow pages reach past the %d in use", id, over, w.hwm)
	}
	for i := id; i <= id+over; i++ {
		if w.seen[i] {
			return nil, w.fail("page %d: reached twice", i)
		}
		w.seen[i] = true
	}
	if over > 0 {
		buf = make([]byte, (over+1)*uint64(w.psz))
		if _, err := w.r.ReadAt(buf, int64(id)*int64(w.psz)); err != nil {
			return nil, w.fail("page %d: %v", id, err)
		}
	}
	return buf, nil
}

// bucket walks the bucket whose header says root (inline: the page in
// inline), named name within the root bucket ("" for the root itself).
func (w *pageWalker) bucket(root uint64, inline []byte, name string) error {
	if root == 0 {
		// An inline bucket: a leaf page inside its parent's value. bbolt's
		// check skips it; its contents still have to read.
		if len(inline) < pageHeaderSize || le.Uint16(inline[8:]) != flagLeaf {
			return w.fail("bucket %q: inline page is not a leaf", name)
		}
		_, err := w.node(inline, 0, nil, nil, name)
		return err
	}
	_, err := w.tree(root, nil, nil, name)
	return err
}

// tree walks the subtree at page id; its keys must be >= lo and < hi (nil:
// unbounded). It returns the largest key in it.
func (w *pageWalker) tree(id uint64, lo, hi []byte, name string) ([]byte, error) {
	w.depth++
	defer func() { w.depth-- }()
	p, err := w.page(id)
	if err != nil {
		return nil, err
	}
	m, err := w.node(p, id, lo, hi, name)
	return bytes.Clone(m), err // p's buffer is reused
}

func (w *pageWalker) node(p []byte, id uint64, lo, hi []byte, name string) ([]byte, error) {
	pv := pageView{w: w, p: p, id: id, flags: le.Uint16(p[8:]), count: int(le.Uint16(p[10:]))}
	if pageHeaderSize+pv.count*elemSize > len(p) {
		return nil, w.fail("page %d: %d elements do not fit", id, pv.count)
	}
	switch pv.flags {
	case flagBranch:
		return w.branch(pv, lo, hi, name)
	case flagLeaf:
		return w.leafPage(pv, lo, hi, name)
	}
	return nil, w.fail("page %d: has unexpected flags %#x for a %s page", id, pv.flags, "branch or leaf")
}

// pageView reads one page's elements, every offset checked against it.
type pageView struct {
	w     *pageWalker
	p     []byte
	id    uint64
	flags uint16
	count int
}

func (pv pageView) elem(i int) (k, v []byte, f uint32, child uint64, err error) {
	p := pv.p
	off := pageHeaderSize + i*elemSize
	e := p[off : off+elemSize]
	pos := uint64(le.Uint32(e[4:]))
	ks := uint64(le.Uint32(e[8:]))
	if pv.flags == flagBranch {
		pos, ks = uint64(le.Uint32(e[0:])), uint64(le.Uint32(e[4:]))
		if uint64(off)+pos+ks > uint64(len(p)) {
			return nil, nil, 0, 0, pv.w.fail("page %d: branch element %d out of the page", pv.id, i)
		}
		return p[uint64(off)+pos : uint64(off)+pos+ks], nil, 0, le.Uint64(e[8:]), nil
	}
	vs := uint64(le.Uint32(e[12:]))
	if uint64(off)+pos+ks+vs > uint64(len(p)) {
		return nil, nil, 0, 0, pv.w.fail("page %d: leaf element %d out of the page", pv.id, i)
	}
	k = p[uint64(off)+pos : uint64(off)+pos+ks]
	v = p[uint64(off)+pos+ks : uint64(off)+pos+ks+vs]
	return k, v, le.Uint32(e[0:]), 0, nil
}

// checked is element i, its order checked. Salvaging, a damaged element
// is skipped and an order error let through; otherwise both are errors.
func (pv pageView) checked(i int, prev, hi []byte) (k, v []byte, f uint32, child uint64, skip bool, err error) {
	if k, v, f, child, err = pv.elem(i); err != nil {
		if pv.w.salvage {
			return nil, nil, 0, 0, true, nil
		}
		return nil, nil, 0, 0, false, err
	}
	if err := pv.inOrder(i, k, prev, hi); err != nil && !pv.w.salvage {
		return nil, nil, 0, 0, false, err
	}
	return k, v, f, child, false, nil
}

// inOrder checks key i against the one before it (prev) and the bound hi,
// as bbolt's check does.
func (pv pageView) inOrder(i int, k, prev, hi []byte) error {
	if i == 0 && prev != nil && bytes.Compare(prev, k) > 0 || i > 0 && bytes.Compare(prev, k) >= 0 || hi != nil && bytes.Compare(k, hi) >= 0 {
		return pv.w.fail("page %d: key %d out of order", pv.id, i)
	}
	return nil
}

// branch walks a branch page's children; it returns the largest key.
func (w *pageWalker) branch(pv pageView, lo, hi []byte, name string) ([]byte, error) {
	prev := lo
	var maxKey []byte
	for i := range pv.count {
		k, _, _, child, skip, err := pv.checked(i, prev, hi)
		if err != nil {
			return nil, err
		} else if skip {
			continue
		}
		next := hi
		if i+1 < pv.count {
			if nk, _, _, _, err := pv.elem(i + 1); err == nil {
				next = nk
			}
		}
		m, err := w.tree(child, k, next, name)
		if err != nil && !w.salvage {
			return nil, err
		}
		if m != nil {
			maxKey, prev = m, m
		}
	}
	return maxKey, nil
}

// leafPage takes a leaf page's elements; it returns the largest key.
func (w *pageWalker) leafPage(pv pageView, lo, hi []byte, name string) ([]byte, error) {
	if w.salvage && name == string(bucketEvents) {
		w.salvageLeaf(pv.count, pv.elem)
		return nil, nil
	}
	prev := lo
	for i := range pv.count {
		k, v, f, _, skip, err := pv.checked(i, prev, hi)
		if err != nil {
			return nil, err
		} else if skip {
			continue
		}
		prev = k
		if err := w.leaf(k, v, f, pv.id, name); err != nil && !w.salvage {
			return nil, err
		}
	}
	return prev, nil
}

// leaf takes one key/value of a leaf page in bucket name.
func (w *pageWalker) leaf(k, v []byte, flags uint32, id uint64, name string) error {
	if flags&bucketLeafFlag != 0 {
		if name != "" {
			return w.fail("page %d: a bucket inside bucket %q", id, name)
		}
		if len(v) < 16 {
			return w.fail("page %d: bucket %q header is %d bytes", id, k, len(v))
		}
		return w.bucket(le.Uint64(v), v[16:], string(k))
	}
	switch name {
	case string(bucketMeta):
		if bytes.Equal(k, keyNext) && len(v) == 8 {
			w.nextSeq = binary.BigEndian.Uint64(v)
		}
		if bytes.Equal(k, keyBytes) && len(v) == 8 {
			w.bytes = int64(binary.BigEndian.Uint64(v))
		}
		if bytes.Equal(k, keySummedFrom) && len(v) == 8 {
			w.summedFrom, w.haveSummed = binary.BigEndian.Uint64(v), true
		}
	default:
		l, ok := w.lane(name)
		if !ok {
			return nil
		}
		h, ok := readHeader(v)
		if len(k) != 8 || !ok {
			return w.fail("page %d: event of %s with a %d-byte key and a %d-byte value", id, l, len(k), len(v))
		}
		seq := binary.BigEndian.Uint64(k)
		w.lastSeq, w.haveSeq = max(w.lastSeq, seq), true
		w.evBytes += int64(len(dataOf(v, h))) + recordOverhead
		if w.salvage {
			// Checked against its checksum once the meta bucket (after
			// the lanes) has said from which seq every event has one.
			w.values = append(w.values, Record{Seq: seq, Lane: l, Data: append([]byte(nil), v...)})
		}
	case string(bucketEvents): // format 1, or a file halfway through migrate
		if len(k) != 8 || len(v) < 8 {
			return w.fail("page %d: event with a %d-byte key and a %d-byte value", id, len(k), len(v))
		}
		seq := binary.BigEndian.Uint64(k)
		if !w.salvage && w.haveSeq && seq != w.lastSeq+1 {
			return w.fail("page %d: event seq %d follows %d", id, seq, w.lastSeq)
		}
		w.lastSeq, w.haveSeq = seq, true
		w.evBytes += int64(len(v)) - 8 + 16
		if w.salvage {
			w.events = append(w.events, Record{Seq: seq, Lane: DefaultLane, Data: append([]byte(nil), v[8:]...)})
		}
	}
	return nil
}

// lane is parseLane of a bucket name, parsed once per walk.
func (w *pageWalker) lane(name string) (Lane, bool) {
	if l, ok := w.lanes[name]; ok {
		return l, true
	}
	l, ok := parseLane([]byte(name))
	if ok {
		if w.lanes == nil {
			w.lanes = map[string]Lane{}
		}
		w.lanes[name] = l
	}
	return l, ok
}
