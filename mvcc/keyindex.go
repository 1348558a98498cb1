package mvcc

import "math"

// irev is a revision in the key index; the top bit of sub marks a tombstone
// (valid sub revisions are never negative).
type irev struct {
	main int64
	sub  int64
}

const tombBit = math.MinInt64

func (r irev) tomb() bool    { return r.sub < 0 }
func (r irev) rev() Revision { return Revision{Main: r.main, Sub: r.sub &^ tombBit} }
func mkirev(rv Revision, tomb bool) irev {
	r := irev{main: rv.Main, sub: rv.Sub}
	if tomb {
		r.sub |= tombBit
	}
	return r
}

// keyIndex is the history of one user key: every retained revision in
// order, tombstones flagged. A generation is a run of revisions ending with a
// tombstone (or the open run at the end). Only the first generation can have
// lost revisions to compaction or be only partly visible at restore, so its
// create revision and the number of versions before revs[0] are kept
// explicitly; every later generation starts with its own create revision.
//
// An empty revs means the key has no history (it is dropped on the next index
// rebuild).
type keyIndex struct {
	key      string
	revs     []irev
	created0 int64 // create revision of the first generation
	verBase0 int64 // versions of the first generation before revs[0]
}

func (ki *keyIndex) empty() bool { return len(ki.revs) == 0 }

// lastGenOpen reports whether the last generation has revisions (the key is
// live at the latest revision).
func (ki *keyIndex) live() bool {
	return len(ki.revs) > 0 && !ki.revs[len(ki.revs)-1].tomb()
}

// genStart returns the index of the first revision of the generation that
// holds revs[n].
func (ki *keyIndex) genStart(n int) int {
	for i := n - 1; i >= 0; i-- {
		if ki.revs[i].tomb() {
			return i + 1
		}
	}
	return 0
}

// get returns the revision of the key visible at atRev with its create
// revision and version, like etcd's keyIndex.get.
func (ki *keyIndex) get(atRev int64) (mod Revision, created, ver int64, ok bool) {
	n := len(ki.revs) - 1
	for n >= 0 && ki.revs[n].main > atRev {
		n--
	}
	if n < 0 || ki.revs[n].tomb() {
		return Revision{}, 0, 0, false
	}
	s := ki.genStart(n)
	if s == 0 {
		created, ver = ki.created0, ki.verBase0
	} else {
		created = ki.revs[s].main
	}
	ver += int64(n - s + 1)
	return ki.revs[n].rev(), created, ver, true
}

// put appends a put revision. A put on a key without history starts its
// first generation.
func (ki *keyIndex) put(r Revision) {
	if len(ki.revs) == 0 {
		ki.created0, ki.verBase0 = r.Main, 0
	}
	ki.revs = append(ki.revs, mkirev(r, false))
}

// tombstone appends a tombstone; false if the key is not live.
func (ki *keyIndex) tombstone(r Revision) bool {
	if !ki.live() {
		return false
	}
	ki.revs = append(ki.revs, mkirev(r, true))
	return true
}

// restoreNext adds one revision found while scanning the key bucket in
// revision order, as etcd's restoreIntoIndex does.
func (ki *keyIndex) restoreNext(r Revision, tomb bool, create, ver int64) {
	if len(ki.revs) == 0 {
		if tomb {
			// etcd: generation {created 0, ver 1, [tombstone]}, then empty.
			ki.created0, ki.verBase0 = 0, 0
		} else {
			ki.created0, ki.verBase0 = create, ver-1
		}
		ki.revs = append(ki.revs, mkirev(r, tomb))
		return
	}
	if tomb && !ki.live() {
		return // etcd ignores a tombstone on an empty generation (ErrRevisionNotFound)
	}
	ki.revs = append(ki.revs, mkirev(r, tomb))
}

// doCompact finds, as etcd's keyIndex.doCompact, the first generation to
// keep (the first whose tombstone is >= atRev, or the last) and in it the
// index of the newest revision <= atRev (-1 if none). It returns indexes
// into revs: gs is where that generation starts, ri the revision (or -1).
func (ki *keyIndex) doCompact(atRev int64) (gs, ri int) {
	gs = 0
	for i, r := range ki.revs {
		if r.tomb() {
			if r.main >= atRev {
				break
			}
			gs = i + 1
		}
	}
	ge := len(ki.revs) // end (exclusive) of that generation
	for i := gs; i < len(ki.revs); i++ {
		if ki.revs[i].tomb() {
			ge = i + 1
			break
		}
	}
	ri = -1
	for i := ge - 1; i >= gs; i-- {
		if ki.revs[i].main <= atRev {
			ri = i
			break
		}
	}
	return gs, ri
}

// compact drops what etcd's compaction at atRev drops and adds the kept
// revision <= atRev (if any) to keep.
func (ki *keyIndex) compact(atRev int64, keep map[Revision]struct{}) {
	if len(ki.revs) == 0 {
		return
	}
	gs, ri := ki.doCompact(atRev)
	if ri >= 0 {
		keep[ki.revs[ri].rev()] = struct{}{}
	}
	cut := gs
	if ri >= 0 {
		cut = ri
	}
	if cut == 0 {
		return
	}
	if gs == 0 {
		ki.verBase0 += int64(cut)
	} else {
		// the new first generation starts at gs and was never compacted
		if gs < len(ki.revs) {
			ki.created0 = ki.revs[gs].main
		}
		ki.verBase0 = int64(cut - gs)
	}
	n := copy(ki.revs, ki.revs[cut:])
	clear(ki.revs[n:])
	ki.revs = ki.revs[:n]
	if n == 0 {
		ki.revs = nil
	} else if cap(ki.revs) > 2*n {
		ki.revs = append([]irev(nil), ki.revs...)
	}
}

// keepForHash adds the revision a compaction at atRev would keep, except a
// tombstone (etcd's keyIndex.keep).
func (ki *keyIndex) keepForHash(atRev int64, keep map[Revision]struct{}) {
	if len(ki.revs) == 0 {
		return
	}
	_, ri := ki.doCompact(atRev)
	if ri >= 0 && !ki.revs[ri].tomb() {
		keep[ki.revs[ri].rev()] = struct{}{}
	}
}

// since returns the revisions with main >= rev, at most one per main
// revision (the last), as etcd's keyIndex.since (used by watch catch-up).
func (ki *keyIndex) since(rev int64) []irev {
	var out []irev
	var last int64
	for _, r := range ki.revs {
		if r.main < rev {
			continue
		}
		if len(out) > 0 && r.main == last {
			out[len(out)-1] = r
			continue
		}
		out = append(out, r)
		last = r.main
	}
	return out
}
