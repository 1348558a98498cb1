package interop

import (
	"context"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// TestAlarmGateVsEtcd raises NOSPACE and then CORRUPT (Maintenance.Alarm
// ACTIVATE, as etcd's own corruption checks and quota do through raft) on
// etcd 3.7.3 and on etckit and sends both every kind of request: each must
// get the same answer or the same gRPC error (etcd's applierV3Capped and
// applierV3Corrupt, and its quota check before proposing), and once the
// alarm is disarmed writes work again.
func TestAlarmGateVsEtcd(t *testing.T) {
	_, e := startEtcd(t, dataDir(t, "etcd"))
	_, k := startEtckit(t, dataDir(t, "etckit"), nil)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	step := 0
	both := func(req proto.Message) string {
		t.Helper()
		step++
		_, errText := compareCall(t, ctx, step, req, e, k)
		return errText
	}
	for i := range 5 {
		both(&pb.PutRequest{Key: []byte{'k', byte('a' + i)}, Value: []byte("v")})
	}
	both(&pb.LeaseGrantRequest{ID: 7, TTL: 600})
	both(&pb.LeaseGrantRequest{ID: 8, TTL: 600})
	memberID := func(m *member) uint64 {
		r, err := m.maint.Status(ctx, &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.MemberId
	}
	id := memberID(e)
	if memberID(k) != id {
		t.Fatalf("member IDs differ: etcd %x etckit %x", id, memberID(k))
	}
	put := func(key string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte("t")}}}
	}
	get := func(key string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(key)}}}
	}
	del := func(key string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(key)}}}
	}
	nested := func(ops ...*pb.RequestOp) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: ops}}}
	}
	requests := func() []proto.Message {
		return []proto.Message{
			&pb.PutRequest{Key: []byte("ka"), Value: []byte("under alarm")},
			&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")},
			&pb.RangeRequest{Key: []byte("ka"), Serializable: true},
			&pb.DeleteRangeRequest{Key: []byte("kb")},
			&pb.TxnRequest{Success: []*pb.RequestOp{get("kc")}},
			&pb.TxnRequest{Success: []*pb.RequestOp{get("kc")}, Failure: []*pb.RequestOp{put("kc")}},
			&pb.TxnRequest{Success: []*pb.RequestOp{nested(put("kd"))}},
			&pb.TxnRequest{Success: []*pb.RequestOp{del("kd")}},
			&pb.CompactionRequest{Revision: 3},
			&pb.LeaseGrantRequest{ID: 9, TTL: 600},
			&pb.LeaseRevokeRequest{ID: 7},
			&pb.HashKVRequest{},
		}
	}
	for _, alarm := range []pb.AlarmType{pb.AlarmType_NOSPACE, pb.AlarmType_CORRUPT} {
		a := &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: id, Alarm: alarm}
		both(a)
		both(&pb.AlarmRequest{Action: pb.AlarmRequest_GET})
		refused := 0
		for _, req := range requests() {
			if errText := both(req); errText != "" {
				refused++
				t.Logf("%s: %T %s: %s", alarm, req, text(req), errText)
			}
		}
		if refused == 0 {
			t.Fatalf("%s: no request refused", alarm)
		}
		both(&pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, MemberID: id, Alarm: alarm})
		if errText := both(&pb.PutRequest{Key: []byte("ka"), Value: []byte("after " + alarm.String())}); errText != "" {
			t.Fatalf("put after disarming %s: %s", alarm, errText)
		}
	}
	both(&pb.HashKVRequest{})
}
