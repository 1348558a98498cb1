package engine

import (
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Errors of requests refused at apply under an alarm, with etcd's messages
// (server/etcdserver/errors): the server maps them to ErrGRPCNoSpace and
// ErrGRPCCorrupt.
var (
	ErrNoSpace = errors.New("etcdserver: mvcc: database space exceeded")
	ErrCorrupt = errors.New("etcdserver: corrupt cluster")
)

// alarmRefuses is etcd's applierV3Corrupt and applierV3Capped, in front of
// every other check (etcd's chain: Corrupt, Capped, Auth, Quota, Backend):
//   - under CORRUPT: puts, ranges, deletes, txns, compactions, lease grants
//     and lease revokes fail with ErrCorrupt;
//   - under NOSPACE: puts, txns that would put (at any depth, either branch)
//     and lease grants fail with ErrNoSpace.
//
// The gate is in apply, not only at the API, because the alarm is an entry
// of the log: every member refuses the same entries after it, whoever
// proposed them and however long they waited in the log, which is what
// keeps a mixed cluster of etcd and etckit members identical.
func (e *Engine) alarmRefuses(r *pb.InternalRaftRequest) error {
	corrupt, noSpace := e.activeAlarms()
	if !corrupt && !noSpace {
		return nil
	}
	if corrupt {
		switch {
		case r.GetPut() != nil, r.GetRange() != nil, r.GetDeleteRange() != nil, r.GetTxn() != nil,
			r.GetCompaction() != nil, r.GetLeaseGrant() != nil, r.GetLeaseRevoke() != nil:
			return ErrCorrupt
		}
	}
	if noSpace {
		switch {
		case r.GetPut() != nil, r.GetLeaseGrant() != nil:
			return ErrNoSpace
		case r.GetTxn() != nil && txnPuts(r.GetTxn()):
			return ErrNoSpace
		}
	}
	return nil
}

// activeAlarms says whether a CORRUPT and a NOSPACE alarm are raised (for
// any member: etcd's alarm store is cluster-wide).
func (e *Engine) activeAlarms() (corrupt, noSpace bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, a := range e.alarms {
		switch a.GetAlarm() {
		case pb.AlarmType_CORRUPT:
			corrupt = true
		case pb.AlarmType_NOSPACE:
			noSpace = true
		}
	}
	return corrupt, noSpace
}

// txnPuts is etcd's costTxn(r) > 0: a put in either branch, at any depth.
func txnPuts(t *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{t.GetSuccess(), t.GetFailure()} {
		for _, op := range ops {
			if op.GetRequestPut() != nil || (op.GetRequestTxn() != nil && txnPuts(op.GetRequestTxn())) {
				return true
			}
		}
	}
	return false
}
