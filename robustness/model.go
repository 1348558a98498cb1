package robustness

import (
	"fmt"
	"hash/fnv"
	"math"
	"strings"

	"github.com/anishathalye/porcupine"
)

// numKeys is the size of the workload's key space; keyName(i) is key i.
// numLeases is the number of lease IDs the clients share (leaseID(i)):
// the IDs are the clients' own, so a grant whose outcome is unknown still
// names its lease.
const (
	numKeys   = 8
	numLeases = 4
)

func leaseID(slot int) int64 { return 0x7ec0 + int64(slot) }

func keyName(i int) string { return fmt.Sprintf("key%d", i) }

// opKind is the kind of a KV request in the history.
type opKind int

const (
	opGet opKind = iota // linearizable Range of one key
	opPut
	opDelete
	opTxn         // If(compare on Key) Then(Put Key Value) Else(Get Key)
	opLeaseGrant  // LeaseGrant of leaseID(Lease-1), a TTL no run outlives
	opLeaseRevoke // LeaseRevoke of leaseID(Lease-1): its keys deleted at one revision
)

// Errors a request can fail with as its definite outcome (applied and
// refused), as etcd's apply gives them.
const (
	errLeaseNotFound = "lease not found"
	errLeaseExists   = "lease already exists"
)

func (k opKind) String() string {
	return [...]string{"get", "put", "delete", "txn", "lease-grant", "lease-revoke"}[k]
}

// request is a porcupine Operation's input.
type request struct {
	Kind  opKind
	Key   int
	Value string // put, txn's Then put: unique within a run
	// Txn's compare: mod_revision(Key) == CmpModRev, or, with CmpValue,
	// value(Key) == CmpValueOf.
	CmpValue   bool
	CmpModRev  int64
	CmpValueOf string
	// Lease is 1 + the lease slot of a put with a lease, a grant or a
	// revoke; 0 is a put with no lease.
	Lease int
}

// response is a porcupine Operation's output. Unknown is a request whose
// outcome the client never learnt (a timeout, an unavailable member): it
// may have happened at any point after its call or never; Rev, when set
// on an unknown write, is the revision a watch event showed it at.
type response struct {
	Unknown   bool
	Rev       int64 // header revision
	Found     bool  // get, txn's Else get
	KV        keyValue
	Deleted   int64  // delete
	Succeeded bool   // txn
	Err       string // a definite refusal (errLease...); no header then
}

// keyValue is one key's state; Version 0 is a key that does not exist.
type keyValue struct {
	Value                string
	Mod, Create, Version int64
	Lease                int64
}

// kvState is the model's state: the whole key space and the store's
// revision (revisions are global, so the history is not partitioned).
// It is a comparable value, so copies are cheap and == is equality.
type kvState struct {
	Rev    int64
	KVs    [numKeys]keyValue
	Leases [numLeases]bool // granted and not revoked
}

// apply is etcd's semantics for one request: the next state and the
// response etcd gives.
func apply(s kvState, req request) (kvState, response) {
	kv := s.KVs[req.Key]
	switch req.Kind {
	case opGet:
		return s, response{Rev: s.Rev, Found: kv.Version > 0, KV: kv}
	case opPut:
		var lease int64
		if req.Lease != 0 {
			if !s.Leases[req.Lease-1] {
				return s, response{Err: errLeaseNotFound}
			}
			lease = leaseID(req.Lease - 1)
		}
		s = put(s, req.Key, req.Value, lease)
		return s, response{Rev: s.Rev}
	case opLeaseGrant:
		if s.Leases[req.Lease-1] {
			return s, response{Err: errLeaseExists}
		}
		s.Leases[req.Lease-1] = true
		return s, response{Rev: s.Rev}
	case opLeaseRevoke:
		if !s.Leases[req.Lease-1] {
			return s, response{Err: errLeaseNotFound}
		}
		s.Leases[req.Lease-1] = false
		deleted := false
		for i, kv := range s.KVs {
			if kv.Version > 0 && kv.Lease == leaseID(req.Lease-1) {
				s.KVs[i] = keyValue{}
				deleted = true
			}
		}
		if deleted {
			s.Rev++ // every key of the lease deleted in one revision
		}
		return s, response{Rev: s.Rev}
	case opDelete:
		if kv.Version == 0 {
			return s, response{Rev: s.Rev}
		}
		s.Rev++
		s.KVs[req.Key] = keyValue{}
		return s, response{Rev: s.Rev, Deleted: 1}
	case opTxn:
		var ok bool
		if req.CmpValue {
			// etcd's applyCompare: a value compare on a missing key is false.
			ok = kv.Version > 0 && kv.Value == req.CmpValueOf
		} else {
			// Other targets compare a missing key as the zero KeyValue.
			ok = kv.Mod == req.CmpModRev
		}
		if !ok {
			return s, response{Rev: s.Rev, Found: kv.Version > 0, KV: kv}
		}
		s = put(s, req.Key, req.Value, 0)
		return s, response{Rev: s.Rev, Succeeded: true}
	}
	// Every request is built by this package's workload or its tests with
	// one of the kinds above: another kind is a bug in the harness, and
	// porcupine's step function has no error to return it through.
	panic(fmt.Sprintf("unknown op kind %d", req.Kind))
}

func put(s kvState, key int, value string, lease int64) kvState {
	s.Rev++
	kv := s.KVs[key]
	if kv.Version == 0 {
		kv.Create = s.Rev
	}
	kv.Version++
	kv.Mod = s.Rev
	kv.Value = value
	kv.Lease = lease
	s.KVs[key] = kv
	return s
}

// step is the model's Step: the request applied to s must give out, or,
// for an unknown outcome, any output (with a watch-patched revision, a
// write landing exactly there).
func step(s kvState, req request, out response) (bool, kvState) {
	next, want := apply(s, req)
	if out.Unknown {
		if out.Rev != 0 && (next.Rev != out.Rev || next.Rev == s.Rev) {
			return false, s
		}
		return true, next
	}
	return want == out, next
}

// kvModel is the etcd KV model for porcupine, starting at revision
// initRev with no keys (a new cluster is at revision 1).
func kvModel(initRev int64) porcupine.Model {
	return porcupine.Model{
		Init: func() interface{} { return kvState{Rev: initRev} },
		Step: func(state, input, output interface{}) (bool, interface{}) {
			return step(state.(kvState), input.(request), output.(response))
		},
		Equal: func(a, b interface{}) bool { return a.(kvState) == b.(kvState) },
		Hash: func(state interface{}) uint64 {
			s := state.(kvState)
			h := fnv.New64a()
			fmt.Fprintf(h, "%d", s.Rev)
			for _, kv := range s.KVs {
				fmt.Fprintf(h, "|%s/%d/%d/%d/%d", kv.Value, kv.Mod, kv.Create, kv.Version, kv.Lease)
			}
			fmt.Fprint(h, s.Leases)
			return h.Sum64()
		},
		DescribeOperation: func(input, output interface{}) string {
			return describe(input.(request), output.(response))
		},
		DescribeState: func(state interface{}) string {
			s := state.(kvState)
			var b strings.Builder
			fmt.Fprintf(&b, "rev %d:", s.Rev)
			for i, kv := range s.KVs {
				if kv.Version > 0 {
					fmt.Fprintf(&b, " %s=%s", keyName(i), describeKV(true, kv))
				}
			}
			for i, live := range s.Leases {
				if live {
					fmt.Fprintf(&b, " lease %x", leaseID(i))
				}
			}
			return b.String()
		},
	}
}

func describe(req request, out response) string {
	var in string
	switch req.Kind {
	case opGet:
		in = fmt.Sprintf("get(%s)", keyName(req.Key))
	case opPut:
		in = fmt.Sprintf("put(%s, %q)", keyName(req.Key), req.Value)
		if req.Lease != 0 {
			in = fmt.Sprintf("put(%s, %q, lease %x)", keyName(req.Key), req.Value, leaseID(req.Lease-1))
		}
	case opLeaseGrant:
		in = fmt.Sprintf("lease-grant(%x)", leaseID(req.Lease-1))
	case opLeaseRevoke:
		in = fmt.Sprintf("lease-revoke(%x)", leaseID(req.Lease-1))
	case opDelete:
		in = fmt.Sprintf("delete(%s)", keyName(req.Key))
	case opTxn:
		cmp := fmt.Sprintf("mod(%s)==%d", keyName(req.Key), req.CmpModRev)
		if req.CmpValue {
			cmp = fmt.Sprintf("value(%s)==%q", keyName(req.Key), req.CmpValueOf)
		}
		in = fmt.Sprintf("txn(if %s then put %q else get)", cmp, req.Value)
	}
	switch {
	case out.Unknown && out.Rev != 0:
		return fmt.Sprintf("%s -> unknown, watched at rev %d", in, out.Rev)
	case out.Unknown:
		return in + " -> unknown"
	case out.Err != "":
		return in + " -> " + out.Err
	}
	switch req.Kind {
	case opGet:
		return fmt.Sprintf("%s -> rev %d %s", in, out.Rev, describeKV(out.Found, out.KV))
	case opPut, opLeaseGrant, opLeaseRevoke:
		return fmt.Sprintf("%s -> rev %d", in, out.Rev)
	case opDelete:
		return fmt.Sprintf("%s -> rev %d deleted %d", in, out.Rev, out.Deleted)
	default:
		if out.Succeeded {
			return fmt.Sprintf("%s -> rev %d succeeded", in, out.Rev)
		}
		return fmt.Sprintf("%s -> rev %d failed, %s", in, out.Rev, describeKV(out.Found, out.KV))
	}
}

func describeKV(found bool, kv keyValue) string {
	if !found {
		return "not found"
	}
	if kv.Lease != 0 {
		return fmt.Sprintf("%q(mod %d, create %d, ver %d, lease %x)", kv.Value, kv.Mod, kv.Create, kv.Version, kv.Lease)
	}
	return fmt.Sprintf("%q(mod %d, create %d, ver %d)", kv.Value, kv.Mod, kv.Create, kv.Version)
}

// infinity is the return time of a request with an unknown outcome.
const infinity = int64(math.MaxInt64)

// patchHistory settles unknown outcomes with the watch streams, as etcd's
// robustness tests do: an unknown put (or txn) whose unique value a watch
// event shows is given that event's revision, and returns no later than
// the first request that returned having seen that revision; one whose
// value no watcher saw never happened and is dropped (so is a txn whose
// compare may have failed: either way it left no trace). Unknown reads
// tell nothing and are dropped; unknown deletes, grants and revokes stay
// open.
func patchHistory(ops []porcupine.Operation, puts map[string]int64) []porcupine.Operation {
	// minReturn[rev]: earliest return of a completed request whose
	// response revision is rev; suffix minimum below.
	type retAt struct {
		rev int64
		ret int64
	}
	var completed []retAt
	for _, op := range ops {
		out := op.Output.(response)
		if !out.Unknown {
			completed = append(completed, retAt{out.Rev, op.Return})
		}
	}
	earliestAtOrAbove := func(rev int64) int64 {
		best := infinity
		for _, c := range completed {
			if c.rev >= rev && c.ret < best {
				best = c.ret
			}
		}
		return best
	}
	var patched []porcupine.Operation
	for _, op := range ops {
		req, out := op.Input.(request), op.Output.(response)
		if !out.Unknown {
			patched = append(patched, op)
			continue
		}
		switch req.Kind {
		case opGet:
			continue
		case opPut, opTxn:
			rev, ok := puts[req.Value]
			if !ok {
				continue
			}
			op.Output = response{Unknown: true, Rev: rev}
			op.Return = earliestAtOrAbove(rev)
			if op.Return < op.Call {
				// Cannot be: it was written after its call. Keep it
				// open so the checker reports the history.
				op.Return = infinity
			}
		}
		patched = append(patched, op)
	}
	return patched
}
