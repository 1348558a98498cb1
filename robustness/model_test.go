package robustness

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func hop(client int, call, ret int64, req request, out response) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: req, Call: call, Output: out, Return: ret}
}

func putReq(key int, value string) request { return request{Kind: opPut, Key: key, Value: value} }
func get(key int) request                  { return request{Kind: opGet, Key: key} }
func del(key int) request                  { return request{Kind: opDelete, Key: key} }
func grant(slot1 int) request              { return request{Kind: opLeaseGrant, Lease: slot1} }
func revoke(slot1 int) request             { return request{Kind: opLeaseRevoke, Lease: slot1} }
func leasePut(key int, value string, slot1 int) request {
	return request{Kind: opPut, Key: key, Value: value, Lease: slot1}
}
func rev(r int64) response { return response{Rev: r} }
func found(r int64, value string, mod, create, version int64) response {
	return response{Rev: r, Found: true, KV: keyValue{Value: value, Mod: mod, Create: create, Version: version}}
}

// TestModelCatchesViolations: each hand-built history breaks one
// guarantee and must be reported non-linearizable; its good twin, the same
// history with the right answer, must pass. (So the checker can fail, and
// fails for the right reason.)
func TestModelCatchesViolations(t *testing.T) {
	unknown := response{Unknown: true}
	cases := []struct {
		name      string
		good, bad []porcupine.Operation
	}{
		{
			name: "stale read after a newer put returned",
			good: []porcupine.Operation{hop(0, 0, 10, putReq(0, "a"), rev(2)), hop(0, 11, 20, putReq(0, "b"), rev(3)), hop(1, 21, 30, get(0), found(3, "b", 3, 2, 2))},
			bad:  []porcupine.Operation{hop(0, 0, 10, putReq(0, "a"), rev(2)), hop(0, 11, 20, putReq(0, "b"), rev(3)), hop(1, 21, 30, get(0), found(2, "a", 2, 2, 1))},
		},
		{
			name: "acknowledged write lost",
			good: []porcupine.Operation{hop(0, 0, 10, putReq(0, "a"), rev(2)), hop(1, 20, 30, get(0), found(2, "a", 2, 2, 1))},
			bad:  []porcupine.Operation{hop(0, 0, 10, putReq(0, "a"), rev(2)), hop(1, 20, 30, get(0), response{Rev: 2})},
		},
		{
			name: "two puts at one revision",
			good: []porcupine.Operation{hop(0, 0, 10, putReq(0, "a"), rev(2)), hop(1, 20, 30, putReq(1, "b"), rev(3))},
			bad:  []porcupine.Operation{hop(0, 0, 10, putReq(0, "a"), rev(2)), hop(1, 20, 30, putReq(1, "b"), rev(2))},
		},
		{
			name: "txn took the wrong branch (mod revision compare)",
			good: []porcupine.Operation{hop(0, 0, 10, putReq(0, "a"), rev(2)),
				hop(1, 20, 30, request{Kind: opTxn, Key: 0, CmpModRev: 2, Value: "b"}, response{Rev: 3, Succeeded: true})},
			bad: []porcupine.Operation{hop(0, 0, 10, putReq(0, "a"), rev(2)),
				hop(1, 20, 30, request{Kind: opTxn, Key: 0, CmpModRev: 2, Value: "b"}, found(2, "a", 2, 2, 1))},
		},
		{
			name: "txn took the wrong branch (value compare on a missing key)",
			good: []porcupine.Operation{hop(1, 20, 30, request{Kind: opTxn, Key: 0, CmpValue: true, Value: "b"}, response{Rev: 1})},
			bad:  []porcupine.Operation{hop(1, 20, 30, request{Kind: opTxn, Key: 0, CmpValue: true, Value: "b"}, response{Rev: 2, Succeeded: true})},
		},
		{
			name: "read of a value never written",
			good: []porcupine.Operation{hop(0, 0, 10, get(0), response{Rev: 1})},
			bad:  []porcupine.Operation{hop(0, 0, 10, get(0), found(1, "zzz", 1, 1, 1))},
		},
		{
			name: "delete of an existing key reported nothing deleted",
			good: []porcupine.Operation{hop(0, 0, 10, putReq(0, "a"), rev(2)), hop(0, 20, 30, del(0), response{Rev: 3, Deleted: 1})},
			bad:  []porcupine.Operation{hop(0, 0, 10, putReq(0, "a"), rev(2)), hop(0, 20, 30, del(0), response{Rev: 2})},
		},
		{
			name: "wrong create revision and version",
			good: []porcupine.Operation{hop(0, 0, 10, putReq(0, "a"), rev(2)), hop(0, 11, 20, putReq(0, "b"), rev(3)), hop(1, 30, 40, get(0), found(3, "b", 3, 2, 2))},
			bad:  []porcupine.Operation{hop(0, 0, 10, putReq(0, "a"), rev(2)), hop(0, 11, 20, putReq(0, "b"), rev(3)), hop(1, 30, 40, get(0), found(3, "b", 3, 3, 1))},
		},
		{
			name: "revision went backwards between two reads",
			good: []porcupine.Operation{hop(0, 0, 10, putReq(0, "a"), rev(2)), hop(1, 20, 30, get(1), response{Rev: 2}), hop(1, 40, 50, get(1), response{Rev: 2})},
			bad:  []porcupine.Operation{hop(0, 0, 10, putReq(0, "a"), rev(2)), hop(1, 20, 30, get(1), response{Rev: 2}), hop(1, 40, 50, get(1), response{Rev: 1})},
		},
		{
			name: "a read saw a write before it was sent (unknown outcome, watched at revision 2)",
			good: []porcupine.Operation{hop(0, 100, infinity, putReq(0, "x"), response{Unknown: true, Rev: 2}), hop(1, 200, 210, get(0), found(2, "x", 2, 2, 1))},
			bad:  []porcupine.Operation{hop(0, 100, infinity, putReq(0, "x"), response{Unknown: true, Rev: 2}), hop(1, 0, 10, get(0), found(2, "x", 2, 2, 1))},
		},
		{
			name: "an unknown outcome cannot explain a read of another value",
			good: []porcupine.Operation{hop(0, 0, infinity, putReq(0, "x"), unknown), hop(1, 20, 30, get(0), found(2, "x", 2, 2, 1))},
			bad:  []porcupine.Operation{hop(0, 0, infinity, putReq(0, "x"), unknown), hop(1, 20, 30, get(0), found(2, "y", 2, 2, 1))},
		},
		{
			name: "a revoked lease's key still there",
			good: []porcupine.Operation{hop(0, 0, 10, grant(1), rev(1)), hop(0, 11, 20, leasePut(0, "a", 1), rev(2)), hop(0, 21, 30, revoke(1), rev(3)),
				hop(1, 40, 50, get(0), response{Rev: 3})},
			bad: []porcupine.Operation{hop(0, 0, 10, grant(1), rev(1)), hop(0, 11, 20, leasePut(0, "a", 1), rev(2)), hop(0, 21, 30, revoke(1), rev(3)),
				hop(1, 40, 50, get(0), found(3, "a", 2, 2, 1))},
		},
		{
			name: "a put with a revoked lease succeeded",
			good: []porcupine.Operation{hop(0, 0, 10, grant(2), rev(1)), hop(0, 11, 20, revoke(2), rev(1)), hop(0, 21, 30, leasePut(0, "a", 2), response{Err: errLeaseNotFound})},
			bad:  []porcupine.Operation{hop(0, 0, 10, grant(2), rev(1)), hop(0, 11, 20, revoke(2), rev(1)), hop(0, 21, 30, leasePut(0, "a", 2), rev(2))},
		},
		{
			name: "a lease granted twice",
			good: []porcupine.Operation{hop(0, 0, 10, grant(1), rev(1)), hop(1, 11, 20, grant(1), response{Err: errLeaseExists})},
			bad:  []porcupine.Operation{hop(0, 0, 10, grant(1), rev(1)), hop(1, 11, 20, grant(1), rev(1))},
		},
		{
			name: "a get lost the key's lease",
			good: []porcupine.Operation{hop(0, 0, 10, grant(1), rev(1)), hop(0, 11, 20, leasePut(0, "a", 1), rev(2)),
				hop(1, 30, 40, get(0), response{Rev: 2, Found: true, KV: keyValue{Value: "a", Mod: 2, Create: 2, Version: 1, Lease: leaseID(0)}})},
			bad: []porcupine.Operation{hop(0, 0, 10, grant(1), rev(1)), hop(0, 11, 20, leasePut(0, "a", 1), rev(2)),
				hop(1, 30, 40, get(0), found(2, "a", 2, 2, 1))},
		},
	}
	model := kvModel(1)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if res := porcupine.CheckOperationsTimeout(model, c.good, 10*time.Second); res != porcupine.Ok {
				t.Errorf("good history: %s, want Ok", res)
			}
			if res := porcupine.CheckOperationsTimeout(model, c.bad, 10*time.Second); res != porcupine.Illegal {
				t.Errorf("bad history: %s, want Illegal", res)
			}
		})
	}
}

// TestPatchHistory: an unknown put a watcher saw gets that revision and
// returns by the first response at or past it; one no watcher saw is
// dropped, as are unknown reads; unknown deletes stay open.
func TestPatchHistory(t *testing.T) {
	ops := []porcupine.Operation{
		hop(0, 0, infinity, putReq(0, "seen"), response{Unknown: true}),
		hop(1, 5, infinity, putReq(1, "never"), response{Unknown: true}),
		hop(2, 5, infinity, get(1), response{Unknown: true}),
		hop(3, 5, infinity, del(1), response{Unknown: true}),
		hop(4, 20, 30, get(0), found(2, "seen", 2, 2, 1)),
		hop(4, 40, 50, get(0), found(2, "seen", 2, 2, 1)),
	}
	got := patchHistory(ops, map[string]int64{"seen": 2})
	if len(got) != 4 {
		t.Fatalf("%d operations after patching, want 4: %v", len(got), got)
	}
	if out := got[0].Output.(response); !out.Unknown || out.Rev != 2 || got[0].Return != 30 {
		t.Errorf("watched put: %+v returning %d, want revision 2 returning at 30", out, got[0].Return)
	}
	if req := got[1].Input.(request); req.Kind != opDelete || got[1].Return != infinity {
		t.Errorf("second operation %+v, want the open delete", got[1])
	}
	if res := porcupine.CheckOperations(kvModel(1), got); !res {
		t.Errorf("patched history not linearizable")
	}
}

func pev(key, value string, mod, create, version int64) watchEvent {
	return watchEvent{Key: key, Value: value, Mod: mod, Create: create, Version: version}
}

// TestWatchValidationCatchesViolations: each broken set of watch streams
// must be reported with the violation named; the good one must pass.
func TestWatchValidationCatchesViolations(t *testing.T) {
	e2 := pev("key0", "a", 2, 2, 1)
	e3 := pev("key1", "b", 3, 3, 1)
	e4 := watchEvent{Delete: true, Key: "key0", Mod: 4}
	history := []porcupine.Operation{
		hop(0, 0, 10, putReq(0, "a"), rev(2)),
		hop(0, 11, 20, putReq(1, "b"), rev(3)),
		hop(0, 21, 30, del(0), response{Rev: 4, Deleted: 1}),
	}
	evs := func(es ...watchEvent) watchResp { return watchResp{Events: es, Rev: es[len(es)-1].Mod} }
	progress := func(r int64) watchResp { return watchResp{Progress: true, Rev: r} }
	good := []watchResp{evs(e2), evs(e3, e4), progress(4)}
	cases := []struct {
		name     string
		stream   []watchResp // m1's stream; m0's is good
		history  []porcupine.Operation
		finalRev int64
		want     string
	}{
		{"gap", []watchResp{evs(e2), evs(e4)}, history, 4, "gap"},
		{"duplicate", []watchResp{evs(e2), evs(e2), evs(e3, e4)}, history, 4, "duplicate"},
		{"out of order", []watchResp{evs(e3), evs(e2), evs(e4)}, history, 4, "out of order"},
		{"streams disagree", []watchResp{evs(e2), evs(pev("key1", "c", 3, 3, 1), e4)}, history, 4, "another stream saw"},
		{"progress ahead of events", []watchResp{evs(e2), progress(4), evs(e3, e4)}, history, 4, "progress notification at revision 4 before the event at revision 3"},
		{"canceled without a compaction", []watchResp{evs(e2), {Canceled: true}}, history, 4, "canceled"},
		{"lost acknowledged put", good, append(history[:3:3], hop(0, 31, 40, putReq(2, "c"), rev(5))), 4, "acknowledged write lost"},
		{"no watcher saw a revision", good, history, 5, "no watcher saw revision 5"},
	}
	t.Run("good", func(t *testing.T) {
		r := validateWatches(map[string][]watchResp{"m0": good, "m1": good}, 4, history)
		if len(r.violations) != 0 {
			t.Errorf("violations: %q", r.violations)
		}
		if r.putRev["a"] != 2 || r.putRev["b"] != 3 || r.events != 6 {
			t.Errorf("putRev %v, %d events", r.putRev, r.events)
		}
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := validateWatches(map[string][]watchResp{"m0": good, "m1": c.stream}, c.finalRev, c.history)
			for _, v := range r.violations {
				if strings.Contains(v, c.want) {
					return
				}
			}
			t.Errorf("violations %q, want one with %q", r.violations, c.want)
		})
	}
	// The same wrong kv in every stream: caught by the replay and by the
	// acknowledged-write check.
	t.Run("wrong version everywhere", func(t *testing.T) {
		bad := []watchResp{evs(e2), evs(pev("key1", "b", 3, 3, 2), e4)}
		r := validateWatches(map[string][]watchResp{"m0": bad, "m1": bad}, 4, history)
		if len(r.violations) == 0 || !strings.Contains(r.violations[0], "the events before it give create 3 version 1") {
			t.Errorf("violations %q", r.violations)
		}
	})
	t.Run("wrong value everywhere", func(t *testing.T) {
		bad := []watchResp{evs(pev("key0", "x", 2, 2, 1)), evs(e3, e4)}
		r := validateWatches(map[string][]watchResp{"m0": bad, "m1": bad}, 4, history)
		if len(r.violations) == 0 || !strings.Contains(r.violations[0], "acknowledged write lost: put(key0, \"a\")") {
			t.Errorf("violations %q", r.violations)
		}
	})
	t.Run("delete of a missing key", func(t *testing.T) {
		bad := []watchResp{evs(e2), evs(e3, watchEvent{Delete: true, Key: "key5", Mod: 4})}
		r := validateWatches(map[string][]watchResp{"m0": bad, "m1": bad}, 4, history[:2])
		if len(r.violations) == 0 || !strings.Contains(r.violations[0], "which did not exist") {
			t.Errorf("violations %q", r.violations)
		}
	})
}

// TestSerializableReadsChecked: a stale serializable read that matches
// the history at its revision passes; one whose value or revision the
// history does not have there is reported.
func TestSerializableReadsChecked(t *testing.T) {
	e2 := pev("key0", "a", 2, 2, 1)
	e3 := pev("key0", "b", 3, 2, 2)
	streams := map[string][]watchResp{"m0": {{Events: []watchEvent{e2, e3}, Rev: 3}}}
	history := []porcupine.Operation{hop(0, 0, 10, putReq(0, "a"), rev(2)), hop(0, 11, 20, putReq(0, "b"), rev(3))}
	r := validateWatches(streams, 3, history)
	r.checkSerializable([]serialRead{
		{1, 0, response{Rev: 1}},
		{1, 0, found(2, "a", 2, 2, 1)},
		{1, 0, found(3, "b", 3, 2, 2)},
		{1, 1, response{Rev: 3}},
	}, 3)
	if len(r.violations) != 0 {
		t.Fatalf("good reads: %q", r.violations)
	}
	for _, bad := range []serialRead{
		{1, 0, found(2, "b", 3, 2, 2)}, // a value from the future
		{1, 0, response{Rev: 3}},       // a written key missing
		{1, 0, found(4, "b", 3, 2, 2)}, // a revision past the end
		{1, 0, found(3, "b", 3, 3, 1)}, // wrong create revision and version
	} {
		r := validateWatches(streams, 3, history)
		r.checkSerializable([]serialRead{bad}, 3)
		if len(r.violations) != 1 {
			t.Errorf("read %+v: violations %q, want one", bad, r.violations)
		}
	}
}

// TestWatchLeaseRevoke: a revoke deleting two keys is one revision with
// two events in one response; split over two responses, or seen with one
// event missing, it is reported.
func TestWatchLeaseRevoke(t *testing.T) {
	l := leaseID(0)
	e2 := watchEvent{Key: "key0", Value: "a", Mod: 2, Create: 2, Version: 1, Lease: l}
	e3 := watchEvent{Key: "key1", Value: "b", Mod: 3, Create: 3, Version: 1, Lease: l}
	d0 := watchEvent{Delete: true, Key: "key0", Mod: 4}
	d1 := watchEvent{Delete: true, Key: "key1", Mod: 4}
	history := []porcupine.Operation{
		hop(0, 0, 5, grant(1), rev(1)),
		hop(0, 6, 10, leasePut(0, "a", 1), rev(2)),
		hop(0, 11, 20, leasePut(1, "b", 1), rev(3)),
		hop(0, 21, 30, revoke(1), rev(4)),
	}
	good := []watchResp{{Events: []watchEvent{e2, e3}, Rev: 3}, {Events: []watchEvent{d0, d1}, Rev: 4}}
	if r := validateWatches(map[string][]watchResp{"m0": good, "m1": good}, 4, history); len(r.violations) != 0 {
		t.Fatalf("good: %q", r.violations)
	}
	for name, bad := range map[string][]watchResp{
		"split":         {{Events: []watchEvent{e2, e3}, Rev: 3}, {Events: []watchEvent{d0}, Rev: 4}, {Events: []watchEvent{d1}, Rev: 4}},
		"event missing": {{Events: []watchEvent{e2, e3}, Rev: 3}, {Events: []watchEvent{d0}, Rev: 4}},
		"wrong lease":   {{Events: []watchEvent{e2, {Key: "key1", Value: "b", Mod: 3, Create: 3, Version: 1}}, Rev: 3}, {Events: []watchEvent{d0, d1}, Rev: 4}},
	} {
		if r := validateWatches(map[string][]watchResp{"m0": good, "m1": bad}, 4, history); len(r.violations) == 0 {
			t.Errorf("%s: no violation", name)
		}
	}
}

// TestWatchResumedChecked: a watch resumed at a revision must hold the
// union's events from there, no more, no fewer.
func TestWatchResumedChecked(t *testing.T) {
	e2 := pev("key0", "a", 2, 2, 1)
	e3 := pev("key1", "b", 3, 3, 1)
	streams := map[string][]watchResp{"m0": {{Events: []watchEvent{e2, e3}, Rev: 3}}}
	history := []porcupine.Operation{hop(0, 0, 10, putReq(0, "a"), rev(2)), hop(0, 11, 20, putReq(1, "b"), rev(3))}
	r := validateWatches(streams, 3, history)
	r.checkResumed("m0", 3, 3, []watchEvent{e3})
	r.checkResumed("m0", 2, 3, []watchEvent{e2, e3})
	if len(r.violations) != 0 {
		t.Fatalf("good: %q", r.violations)
	}
	for _, bad := range [][]watchEvent{{e2, e3}, {}, {pev("key1", "c", 3, 3, 1)}} {
		r := validateWatches(streams, 3, history)
		r.checkResumed("m0", 3, 3, bad)
		if len(r.violations) != 1 {
			t.Errorf("resumed %+v: violations %q", bad, r.violations)
		}
	}
}

// TestHistoryText: a failure's report lists the requests in call order
// with their times (an unknown outcome as never returning), then the
// serializable reads and the watch streams.
func TestHistoryText(t *testing.T) {
	got := historyText([]porcupine.Operation{
		hop(1, 20, infinity, putReq(1, "b"), response{Unknown: true}),
		hop(0, 10, 30, putReq(0, "a"), rev(2)),
	}, []serialRead{{2, 0, response{Rev: 1}}}, map[string][]watchResp{"m0": {{Events: []watchEvent{pev("key0", "a", 2, 2, 1)}, Rev: 2}}})
	want := []string{
		`client 0 [10ns, 30ns] put(key0, "a") -> rev 2`,
		`client 1 [20ns, never] put(key1, "b") -> unknown`,
		`serializable, client 2: get(key0) -> rev 1 not found`,
		`watch m0: {Events:[{Delete:false Key:key0 Value:a Mod:2 Create:2 Version:1 Lease:0}] Progress:false Rev:2 Canceled:false CompactRev:0 Err:}`,
	}
	if lines := strings.Split(strings.TrimSpace(got), "\n"); !slices.Equal(lines, want) {
		t.Errorf("got\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
}
