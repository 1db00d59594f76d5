package buffer

import (
	"cmp"
	"encoding/binary"
	"os"
	"slices"
)

// salvageEvents reads what it can of the buffer file at path: the events
// of every leaf page that is intact, in seq order, and the seq the file
// would have given next (0 if unknown).
func salvageEvents(path string) (recs []Record, next uint64) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0
	}
	defer f.Close()
	for _, psz := range []int{pageSizeOf(f), 16 << 10, 4 << 10} {
		if psz <= 0 {
			continue
		}
		w := &pageWalker{r: f, psz: psz, salvage: true}
		if err := w.run(); err != nil && len(w.events) == 0 && len(w.values) == 0 {
			continue
		}
		w.checkValues()
		slices.SortFunc(w.events, func(a, b Record) int { return cmp.Compare(a.Seq, b.Seq) })
		w.events = slices.CompactFunc(w.events, func(a, b Record) bool { return a.Seq == b.Seq })
		if w.nextSeq != 0 {
			// A seq at or past next_seq is a damaged key.
			w.events = slices.DeleteFunc(w.events, func(r Record) bool { return r.Seq >= w.nextSeq })
		}
		next = w.nextSeq
		if n := len(w.events); n > 0 {
			next = max(next, w.events[n-1].Seq+1)
		}
		return w.events, next
	}
	return nil, 0
}

// checkValues moves the lane events the walk found into w.events, each
// with its data, and Damaged set where its checksum fails. Where the meta
// bucket did not read, the events' own headers say which have one.
func (w *pageWalker) checkValues() {
	from := w.summedFrom
	if !w.haveSummed {
		from = ^uint64(0)
	}
	for _, r := range w.values {
		v := r.Data
		r.Data = valueData(v)
		if r.Data == nil {
			continue
		}
		r.Damaged = checkValue(seqKey(r.Seq), v, from)
		w.events = append(w.events, r)
	}
	w.values = nil
}

// salvageLeaf takes the events of one leaf page of the events bucket. A
// page holds consecutive seqs, so key - index is the same for every
// element; an element whose key disagrees with the most common value was
// damaged, and is left out.
func (w *pageWalker) salvageLeaf(count int, elem func(int) ([]byte, []byte, uint32, uint64, error)) {
	type kv struct {
		seq, idx uint64
		data     []byte
	}
	var got []kv
	bases := map[uint64]int{}
	var best uint64
	for i := range count {
		k, v, f, _, err := elem(i)
		if err != nil || f != 0 || len(k) != 8 || len(v) < 8 {
			continue
		}
		seq := binary.BigEndian.Uint64(k)
		got = append(got, kv{seq, uint64(i), v[8:]})
		b := seq - uint64(i)
		bases[b]++
		if bases[b] > bases[best] {
			best = b
		}
	}
	for _, r := range got {
		if r.seq == best+r.idx {
			w.events = append(w.events, Record{Seq: r.seq, Lane: DefaultLane, Data: append([]byte(nil), r.data...)})
		}
	}
}
