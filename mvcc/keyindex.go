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
// create revision and the number of its versions before the first retained
// revision are kept explicitly; every later generation starts with its own
// create revision.
//
// To keep the per-key footprint small, those two numbers live in h[0] (main =
// create revision, sub = versions dropped) and the revisions in h[1:]. An
// empty h means the key has no history (it is dropped on the next index
// rebuild).
type keyIndex struct {
	key string
	h   []irev
}

func (ki *keyIndex) empty() bool { return len(ki.h) == 0 }

func (ki *keyIndex) revs() []irev {
	if len(ki.h) == 0 {
		return nil
	}
	return ki.h[1:]
}

// live reports whether the key exists at the latest revision.
func (ki *keyIndex) live() bool {
	return len(ki.h) > 1 && !ki.h[len(ki.h)-1].tomb()
}

// get returns the revision of the key visible at atRev with its create
// revision and version, like etcd's keyIndex.get.
func (ki *keyIndex) get(atRev int64) (mod Revision, created, ver int64, ok bool) {
	revs := ki.revs()
	n := len(revs) - 1
	for n >= 0 && revs[n].main > atRev {
		n--
	}
	if n < 0 || revs[n].tomb() {
		return Revision{}, 0, 0, false
	}
	s := n
	for s > 0 && !revs[s-1].tomb() {
		s--
	}
	if s == 0 {
		created, ver = ki.h[0].main, ki.h[0].sub
	} else {
		created = revs[s].main
	}
	ver += int64(n - s + 1)
	return revs[n].rev(), created, ver, true
}

// put appends a put revision. A put on a key without history starts its
// first generation.
func (ki *keyIndex) put(r Revision) {
	if len(ki.h) == 0 {
		ki.h = []irev{{main: r.Main}, mkirev(r, false)}
		return
	}
	ki.h = append(ki.h, mkirev(r, false))
}

// tombstone appends a tombstone; false if the key is not live.
func (ki *keyIndex) tombstone(r Revision) bool {
	if !ki.live() {
		return false
	}
	ki.h = append(ki.h, mkirev(r, true))
	return true
}

// restoreNext adds one revision found while scanning the key bucket in
// revision order, as etcd's restoreIntoIndex does.
func (ki *keyIndex) restoreNext(r Revision, tomb bool, create, ver int64) {
	if len(ki.h) == 0 {
		if tomb {
			// etcd: generation {created 0, ver 1, [tombstone]}, then empty.
			ki.h = []irev{{}, mkirev(r, true)}
		} else {
			ki.h = []irev{{main: create, sub: ver - 1}, mkirev(r, false)}
		}
		return
	}
	if tomb && !ki.live() {
		return // etcd ignores a tombstone on an empty generation (ErrRevisionNotFound)
	}
	ki.h = append(ki.h, mkirev(r, tomb))
}

// doCompact finds, as etcd's keyIndex.doCompact, the first generation to
// keep (the first whose tombstone is >= atRev, or the last) and in it the
// newest revision <= atRev (-1 if none). Results index revs(): gs is where
// that generation starts, ri the revision.
func doCompact(revs []irev, atRev int64) (gs, ri int) {
	for i, r := range revs {
		if r.tomb() {
			if r.main >= atRev {
				break
			}
			gs = i + 1
		}
	}
	ge := len(revs) // end (exclusive) of that generation
	for i := gs; i < len(revs); i++ {
		if revs[i].tomb() {
			ge = i + 1
			break
		}
	}
	ri = -1
	for i := ge - 1; i >= gs; i-- {
		if revs[i].main <= atRev {
			ri = i
			break
		}
	}
	return gs, ri
}

// compact drops what etcd's compaction at atRev drops and adds the kept
// revision <= atRev (if any) to keep.
//
// extra receives the revisions <= atRev that the index keeps beyond that
// one: they exist only when a transaction deleted a key and put it again at
// the same main revision (a from-key DeleteRange slips past etcd's
// duplicate-key check). etcd deletes them from the file while its index
// still points at them, and later dies on "range failed to find revision
// pair"; we keep them on disk (but out of the hashes, which etcd computes
// without them).
func (ki *keyIndex) compact(atRev int64, keep, extra map[Revision]struct{}) {
	revs := ki.revs()
	if len(revs) == 0 {
		return
	}
	gs, ri := doCompact(revs, atRev)
	if ri >= 0 {
		keep[revs[ri].rev()] = struct{}{}
		for i := ri + 1; i < len(revs) && revs[i].main <= atRev; i++ {
			extra[revs[i].rev()] = struct{}{}
		}
	}
	cut := gs
	if ri >= 0 {
		cut = ri
	}
	if cut == 0 {
		return
	}
	if cut == len(revs) {
		ki.h = nil
		return
	}
	hdr := ki.h[0]
	if gs == 0 {
		hdr.sub += int64(cut)
	} else {
		// the new first generation starts at gs and was never compacted
		hdr = irev{main: revs[gs].main, sub: int64(cut - gs)}
	}
	n := len(revs) - cut
	if cap(ki.h) > 2*(n+1) {
		nh := make([]irev, n+1)
		copy(nh[1:], revs[cut:])
		ki.h = nh
	} else {
		copy(ki.h[1:], revs[cut:])
		clear(ki.h[n+1:])
		ki.h = ki.h[:n+1]
	}
	ki.h[0] = hdr
}

// keepForHash adds the revision a compaction at atRev would keep, except a
// tombstone (etcd's keyIndex.keep).
func (ki *keyIndex) keepForHash(atRev int64, keep map[Revision]struct{}) {
	revs := ki.revs()
	if len(revs) == 0 {
		return
	}
	_, ri := doCompact(revs, atRev)
	if ri >= 0 && !revs[ri].tomb() {
		keep[revs[ri].rev()] = struct{}{}
	}
}
