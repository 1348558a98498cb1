package robustness

import (
	"fmt"
	"sort"

	"github.com/anishathalye/porcupine"
)

// watchReport is what validateWatches found: the union of every stream's
// events by revision, the revision at which each put's value was
// written, and the violations.
type watchReport struct {
	union      map[int64]watchEvent
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
//   - ordered: a stream's events come in increasing revision order
//     (every write of the workload changes one key, so one event per
//     revision), no duplicates;
//   - reliable, no gaps: a stream holds every event from revision 2 to its
//     last (a stream may end only with a compaction cancel);
//   - atomic and consistent: every stream that saw a revision saw the same
//     event there, and the union is gapless from revision 2 to finalRev
//     (the store's revision at the end: every revision is one event);
//   - each event's create revision and version are what the events before
//     it imply (the KV history replayed);
//   - progress notifications are never ahead of events: after a progress
//     notification at revision P the stream had delivered every event up
//     to P;
//   - every acknowledged write is in the union at the revision its
//     response gave, with its value (0 acknowledged writes lost).
func validateWatches(streams map[string][]watchResp, finalRev int64, history []porcupine.Operation) *watchReport {
	r := &watchReport{union: map[int64]watchEvent{}, putRev: map[string]int64{}}
	names := make([]string, 0, len(streams))
	for name := range streams {
		names = append(names, name)
	}
	sort.Strings(names)
	type progress struct {
		at   int64 // revision of the notification
		last int64 // last event revision delivered before it
	}
	var progresses []struct {
		stream string
		p      progress
	}
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
				progresses = append(progresses, struct {
					stream string
					p      progress
				}{name, progress{resp.Rev, last}})
				continue
			}
			for _, ev := range resp.Events {
				r.events++
				switch {
				case ev.Mod == last:
					r.fail("%s: duplicate event at revision %d", name, ev.Mod)
					continue
				case ev.Mod < last:
					r.fail("%s: event at revision %d after revision %d (out of order)", name, ev.Mod, last)
					continue
				case ev.Mod > last+1:
					r.fail("%s: gap: revisions %d..%d missing before %d", name, last+1, ev.Mod-1, ev.Mod)
				}
				last = ev.Mod
				if prev, ok := r.union[ev.Mod]; ok {
					if prev != ev {
						r.fail("%s: revision %d is %+v, another stream saw %+v", name, ev.Mod, ev, prev)
					}
					continue
				}
				r.union[ev.Mod] = ev
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
		ev, ok := r.union[rev]
		if !ok {
			r.fail("no watcher saw revision %d (final revision %d)", rev, finalRev)
			continue
		}
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
	for rev := range r.union {
		if rev > finalRev {
			r.fail("event at revision %d beyond the final revision %d", rev, finalRev)
		}
	}
	for _, pr := range progresses {
		for rev := pr.p.last + 1; rev <= pr.p.at; rev++ {
			if _, ok := r.union[rev]; ok {
				r.fail("%s: progress notification at revision %d before the event at revision %d", pr.stream, pr.p.at, rev)
				break
			}
		}
	}
	// Acknowledged writes.
	for _, op := range history {
		req, out := op.Input.(request), op.Output.(response)
		if out.Unknown {
			continue
		}
		key := keyName(req.Key)
		switch {
		case req.Kind == opPut || (req.Kind == opTxn && out.Succeeded):
			ev, ok := r.union[out.Rev]
			if !ok || ev.Delete || ev.Key != key || ev.Value != req.Value {
				r.fail("acknowledged write lost: %s at revision %d, the watch streams have %+v there", describe(req, out), out.Rev, ev)
			}
		case req.Kind == opDelete && out.Deleted > 0:
			ev, ok := r.union[out.Rev]
			if !ok || !ev.Delete || ev.Key != key {
				r.fail("acknowledged delete lost: %s, the watch streams have %+v there", describe(req, out), ev)
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
			ev, ok := r.union[rev]
			if !ok || ev.Key != key {
				continue
			}
			if ev.Delete {
				want = keyValue{}
			} else {
				want = keyValue{Value: ev.Value, Mod: ev.Mod, Create: ev.Create, Version: ev.Version}
			}
		}
		got := response{Rev: rd.out.Rev, Found: want.Version > 0, KV: want}
		if got != rd.out {
			r.fail("serializable read by client %d: %s, the history has %s at that revision",
				rd.client, describe(request{Kind: opGet, Key: rd.key}, rd.out), describeKV(got.Found, got.KV))
		}
	}
}
