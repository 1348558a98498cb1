package robustness

import (
	"fmt"
	"slices"
	"sort"

	"github.com/anishathalye/porcupine"
)

// watchReport is what validateWatches found: the union of every stream's
// events by revision, the revision at which each put's value was
// written, and the violations.
type watchReport struct {
	union      map[int64][]watchEvent
	putRev     map[string]int64 // value -> revision of the put that wrote it
	events     int              // events received, summed over streams
	violations []string
}

func (r *watchReport) fail(format string, args ...any) {
	if len(r.violations) < 50 {
		r.violations = append(r.violations, fmt.Sprintf(format, args...))
	}
}

// validateWatches checks the watch streams, each watching the workload's
// key space from revision 1, against each other, against etcd's watch
// guarantees, and against the KV history:
//
//   - ordered: a stream's revisions increase, no duplicates;
//   - atomic: a revision's events (one, or every key a lease revoke
//     deleted) come in one response;
//   - reliable, no gaps: a stream holds every revision from 2 to its last
//     (a stream may end only with a compaction cancel);
//   - every stream that saw a revision saw the same events there, and the
//     union is gapless from revision 2 to finalRev (the store's revision at
//     the end: every revision of this workload changes a watched key);
//   - each event's create revision and version are what the events before
//     it imply (the KV history replayed);
//   - progress notifications are never ahead of events: after a progress
//     notification at revision P the stream had delivered every event up
//     to P;
//   - every acknowledged write is in the union at the revision its
//     response gave, with its value and lease (0 acknowledged writes lost).
func validateWatches(streams map[string][]watchResp, finalRev int64, history []porcupine.Operation) *watchReport {
	r := &watchReport{union: map[int64][]watchEvent{}, putRev: map[string]int64{}}
	names := make([]string, 0, len(streams))
	for name := range streams {
		names = append(names, name)
	}
	sort.Strings(names)
	type progress struct {
		stream string
		at     int64 // revision of the notification
		last   int64 // last revision delivered before it
	}
	var progresses []progress
	for _, name := range names {
		var last int64 = 1 // watching from revision 1: the first event is at 2
		ended := false
		for _, resp := range streams[name] {
			if ended {
				r.fail("%s: a response after the stream was canceled", name)
				break
			}
			if resp.Canceled {
				if resp.CompactRev == 0 || resp.CompactRev <= last+1 {
					r.fail("%s: stream canceled after revision %d (compact revision %d, %s)", name, last, resp.CompactRev, resp.Err)
				}
				ended = true
				continue
			}
			if resp.Progress {
				progresses = append(progresses, progress{name, resp.Rev, last})
				continue
			}
			r.events += len(resp.Events)
			for i := 0; i < len(resp.Events); {
				rev := resp.Events[i].Mod
				j := i
				for j < len(resp.Events) && resp.Events[j].Mod == rev {
					j++
				}
				group := resp.Events[i:j]
				i = j
				switch {
				case rev == last:
					r.fail("%s: duplicate event at revision %d (or its events split over two responses)", name, rev)
					continue
				case rev < last:
					r.fail("%s: event at revision %d after revision %d (out of order)", name, rev, last)
					continue
				case rev > last+1:
					r.fail("%s: gap: revisions %d..%d missing before %d", name, last+1, rev-1, rev)
				}
				last = rev
				keys := map[string]bool{}
				for _, ev := range group {
					if keys[ev.Key] {
						r.fail("%s: duplicate event for %s at revision %d", name, ev.Key, rev)
					}
					keys[ev.Key] = true
				}
				if prev, ok := r.union[rev]; ok {
					if !slices.Equal(prev, group) {
						r.fail("%s: revision %d is %+v, another stream saw %+v", name, rev, group, prev)
					}
					continue
				}
				r.union[rev] = slices.Clone(group)
			}
			if resp.Rev < last {
				r.fail("%s: response header revision %d below its event at %d", name, resp.Rev, last)
			}
		}
	}
	// The union, replayed: gapless, each event's kv as the history puts it.
	type keyState struct{ create, version int64 }
	keys := map[string]keyState{}
	for rev := int64(2); rev <= finalRev; rev++ {
		group, ok := r.union[rev]
		if !ok {
			r.fail("no watcher saw revision %d (final revision %d)", rev, finalRev)
			continue
		}
		for _, ev := range group {
			ks := keys[ev.Key]
			if ev.Delete {
				if ks.version == 0 {
					r.fail("revision %d deletes %s, which did not exist", rev, ev.Key)
				}
				delete(keys, ev.Key)
				continue
			}
			if ks.version == 0 {
				ks.create = rev
			}
			ks.version++
			if ev.Create != ks.create || ev.Version != ks.version {
				r.fail("revision %d: %s create %d version %d, the events before it give create %d version %d",
					rev, ev.Key, ev.Create, ev.Version, ks.create, ks.version)
			}
			keys[ev.Key] = ks
			if prev, dup := r.putRev[ev.Value]; dup {
				r.fail("value %q written twice, at revisions %d and %d", ev.Value, prev, rev)
			}
			r.putRev[ev.Value] = rev
		}
	}
	for rev := range r.union {
		if rev > finalRev {
			r.fail("event at revision %d beyond the final revision %d", rev, finalRev)
		}
	}
	for _, pr := range progresses {
		for rev := pr.last + 1; rev <= pr.at; rev++ {
			if _, ok := r.union[rev]; ok {
				r.fail("%s: progress notification at revision %d before the event at revision %d", pr.stream, pr.at, rev)
				break
			}
		}
	}
	// Acknowledged writes.
	find := func(rev int64, key string) (watchEvent, bool) {
		for _, ev := range r.union[rev] {
			if ev.Key == key {
				return ev, true
			}
		}
		return watchEvent{}, false
	}
	for _, op := range history {
		req, out := op.Input.(request), op.Output.(response)
		if out.Unknown || out.Err != "" {
			continue
		}
		key := keyName(req.Key)
		switch {
		case req.Kind == opPut || (req.Kind == opTxn && out.Succeeded):
			var lease int64
			if req.Lease != 0 {
				lease = leaseID(req.Lease - 1)
			}
			ev, ok := find(out.Rev, key)
			if !ok || ev.Delete || ev.Value != req.Value || ev.Lease != lease {
				r.fail("acknowledged write lost: %s at revision %d, the watch streams have %+v there", describe(req, out), out.Rev, r.union[out.Rev])
			}
		case req.Kind == opDelete && out.Deleted > 0:
			ev, ok := find(out.Rev, key)
			if !ok || !ev.Delete {
				r.fail("acknowledged delete lost: %s, the watch streams have %+v there", describe(req, out), r.union[out.Rev])
			}
		}
	}
	return r
}

// checkSerializable checks serializable reads against the KV history
// the watch streams give (validated above): a read reporting revision R
// must return the key as it was at R, and R cannot be past the end.
func (r *watchReport) checkSerializable(reads []serialRead, finalRev int64) {
	for _, rd := range reads {
		if rd.out.Rev > finalRev || rd.out.Rev < 1 {
			r.fail("serializable read of %s at revision %d, the final revision is %d", keyName(rd.key), rd.out.Rev, finalRev)
			continue
		}
		key := keyName(rd.key)
		var want keyValue
		for rev := int64(2); rev <= rd.out.Rev; rev++ {
			for _, ev := range r.union[rev] {
				if ev.Key != key {
					continue
				}
				if ev.Delete {
					want = keyValue{}
				} else {
					want = keyValue{Value: ev.Value, Mod: ev.Mod, Create: ev.Create, Version: ev.Version, Lease: ev.Lease}
				}
			}
		}
		got := response{Rev: rd.out.Rev, Found: want.Version > 0, KV: want}
		if got != rd.out {
			r.fail("serializable read by client %d: %s, the history has %s at that revision",
				rd.client, describe(request{Kind: opGet, Key: rd.key}, rd.out), describeKV(got.Found, got.KV))
		}
	}
}

// checkResumed: a watch started at revision from (not compacted) holds
// exactly the union's events from there to the end.
func (r *watchReport) checkResumed(name string, from, to int64, evs []watchEvent) {
	var want []watchEvent
	for rev := from; rev <= to; rev++ {
		want = append(want, r.union[rev]...)
	}
	if !slices.Equal(want, evs) {
		r.fail("%s: a watch resumed at revision %d got %d events, the streams have %d from there (first difference at %d)",
			name, from, len(evs), len(want), firstDiff(want, evs))
	}
}

func firstDiff(a, b []watchEvent) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
