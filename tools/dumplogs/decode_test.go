package dumplogs

import (
	"strings"
	"testing"

	"github.com/etckit/etckit/tools/cli"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func normal(t *testing.T, m proto.Message) *raftpb.Entry {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	typ := raftpb.EntryNormal
	return &raftpb.Entry{Type: &typ, Data: b}
}

func hdr(id uint64) *pb.RequestHeader { return &pb.RequestHeader{ID: id} }

// TestRenderEveryRequest renders one of each InternalRaftRequest kind: the
// text is etckit's field-by-field format, passwords never appear.
func TestRenderEveryRequest(t *testing.T) {
	for _, c := range []struct {
		r    *pb.InternalRaftRequest
		want string
	}{
		{&pb.InternalRaftRequest{Header: hdr(1), Range: &pb.RangeRequest{Key: []byte("/a"), RangeEnd: []byte("/b"), Limit: 10, Revision: 5, SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_MOD, Serializable: true, KeysOnly: true, CountOnly: true}},
			`range key="/a" range_end="/b" limit=10 revision=5 sort_order=DESCEND sort_target=MOD serializable keys_only count_only req_id=1`},
		{&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 2, Username: "root", AuthRevision: 7}, Put: &pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: 0x10, PrevKv: true, IgnoreValue: true, IgnoreLease: true}},
			`put key="k" value="v" lease=10 prev_kv ignore_value ignore_lease req_id=2 user="root" auth_revision=7`},
		{&pb.InternalRaftRequest{ID: 3, DeleteRange: &pb.DeleteRangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\xff"), PrevKv: true}},
			`delete_range key="\x00" range_end="\xff" prev_kv req_id=3`},
		{&pb.InternalRaftRequest{Header: hdr(4), Txn: &pb.TxnRequest{
			Compare: []*pb.Compare{{Target: pb.Compare_LEASE, Key: []byte("k"), Result: pb.Compare_NOT_EQUAL, TargetUnion: &pb.Compare_Lease{Lease: 255}},
				{Target: pb.Compare_CREATE, Key: []byte("k"), RangeEnd: []byte("l"), Result: pb.Compare_LESS, TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 3}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("k")}}},
				{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("n"), Value: []byte("1")}}}}}}}}}},
			`txn compare=[target=LEASE key="k" result=NOT_EQUAL lease=ff; target=CREATE key="k" range_end="l" result=LESS create_revision=3] success=[range key="k"; txn compare=[] success=[put key="n" value="1"] failure=[]] failure=[] req_id=4`},
		{&pb.InternalRaftRequest{Header: hdr(5), Compaction: &pb.CompactionRequest{Revision: 81}}, `compaction revision=81 req_id=5`},
		{&pb.InternalRaftRequest{Header: hdr(6), LeaseGrant: &pb.LeaseGrantRequest{TTL: 60, ID: 0x694d}}, `lease_grant id=694d ttl=60 req_id=6`},
		{&pb.InternalRaftRequest{Header: hdr(7), LeaseRevoke: &pb.LeaseRevokeRequest{ID: 0x694d}}, `lease_revoke id=694d req_id=7`},
		{&pb.InternalRaftRequest{Header: hdr(8), LeaseCheckpoint: &pb.LeaseCheckpointRequest{Checkpoints: []*pb.LeaseCheckpoint{{ID: 1, Remaining_TTL: 30}, {ID: 2, Remaining_TTL: 40}}}},
			`lease_checkpoint checkpoints=[id=1 remaining_ttl=30; id=2 remaining_ttl=40] req_id=8`},
		{&pb.InternalRaftRequest{Header: hdr(9), Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: 0xabc, Alarm: pb.AlarmType_NOSPACE}}, `alarm action=ACTIVATE member_id=abc alarm=NOSPACE req_id=9`},
		{&pb.InternalRaftRequest{Header: hdr(10), AuthEnable: &pb.AuthEnableRequest{}}, `auth_enable req_id=10`},
		{&pb.InternalRaftRequest{Header: hdr(11), AuthDisable: &pb.AuthDisableRequest{}}, `auth_disable req_id=11`},
		{&pb.InternalRaftRequest{Header: hdr(12), AuthStatus: &pb.AuthStatusRequest{}}, `auth_status req_id=12`},
		{&pb.InternalRaftRequest{Header: hdr(13), Authenticate: &pb.InternalAuthenticateRequest{Name: "u", Password: "secret", SimpleToken: "tok"}}, `authenticate name="u" password=<redacted> simple_token=<redacted> req_id=13`},
		{&pb.InternalRaftRequest{Header: hdr(14), AuthUserAdd: &pb.AuthUserAddRequest{Name: "u", Password: "secret", HashedPassword: "$2a$", Options: &authpb.UserAddOptions{NoPassword: true}}}, `auth_user_add name="u" password=<redacted> hashed_password=<redacted> no_password req_id=14`},
		{&pb.InternalRaftRequest{Header: hdr(15), AuthUserDelete: &pb.AuthUserDeleteRequest{Name: "u"}}, `auth_user_delete name="u" req_id=15`},
		{&pb.InternalRaftRequest{Header: hdr(16), AuthUserGet: &pb.AuthUserGetRequest{Name: "u"}}, `auth_user_get name="u" req_id=16`},
		{&pb.InternalRaftRequest{Header: hdr(17), AuthUserChangePassword: &pb.AuthUserChangePasswordRequest{Name: "u", Password: "secret"}}, `auth_user_change_password name="u" password=<redacted> req_id=17`},
		{&pb.InternalRaftRequest{Header: hdr(18), AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "u", Role: "r"}}, `auth_user_grant_role user="u" role="r" req_id=18`},
		{&pb.InternalRaftRequest{Header: hdr(19), AuthUserRevokeRole: &pb.AuthUserRevokeRoleRequest{Name: "u", Role: "r"}}, `auth_user_revoke_role name="u" role="r" req_id=19`},
		{&pb.InternalRaftRequest{Header: hdr(20), AuthUserList: &pb.AuthUserListRequest{}}, `auth_user_list req_id=20`},
		{&pb.InternalRaftRequest{Header: hdr(21), AuthRoleList: &pb.AuthRoleListRequest{}}, `auth_role_list req_id=21`},
		{&pb.InternalRaftRequest{Header: hdr(22), AuthRoleAdd: &pb.AuthRoleAddRequest{Name: "r"}}, `auth_role_add name="r" req_id=22`},
		{&pb.InternalRaftRequest{Header: hdr(23), AuthRoleDelete: &pb.AuthRoleDeleteRequest{Role: "r"}}, `auth_role_delete role="r" req_id=23`},
		{&pb.InternalRaftRequest{Header: hdr(24), AuthRoleGet: &pb.AuthRoleGetRequest{Role: "r"}}, `auth_role_get role="r" req_id=24`},
		{&pb.InternalRaftRequest{Header: hdr(25), AuthRoleGrantPermission: &pb.AuthRoleGrantPermissionRequest{Name: "r", Perm: &authpb.Permission{PermType: authpb.Permission_READWRITE, Key: []byte("/a"), RangeEnd: []byte("/b")}}},
			`auth_role_grant_permission name="r" perm=READWRITE key="/a" range_end="/b" req_id=25`},
		{&pb.InternalRaftRequest{Header: hdr(26), AuthRoleRevokePermission: &pb.AuthRoleRevokePermissionRequest{Role: "r", Key: []byte("/a")}}, `auth_role_revoke_permission role="r" key="/a" req_id=26`},
		{&pb.InternalRaftRequest{Header: hdr(27), ClusterVersionSet: &membershippb.ClusterVersionSetRequest{Ver: "3.6.0"}}, `cluster_version_set ver="3.6.0" req_id=27`},
		{&pb.InternalRaftRequest{Header: hdr(28), ClusterMemberAttrSet: &membershippb.ClusterMemberAttrSetRequest{Member_ID: 0x2e, MemberAttributes: &membershippb.Attributes{Name: "n", ClientUrls: []string{"http://a"}}}},
			`cluster_member_attr_set member_id=2e name="n" client_urls=["http://a"] req_id=28`},
		{&pb.InternalRaftRequest{Header: hdr(29), DowngradeInfoSet: &membershippb.DowngradeInfoSetRequest{Enabled: true, Ver: "3.5.0"}}, `downgrade_info_set enabled ver="3.5.0" req_id=29`},
		{&pb.InternalRaftRequest{Header: hdr(30), DowngradeVersionTest: &pb.DowngradeVersionTestRequest{Ver: "3.5"}}, `downgrade_version_test ver="3.5" req_id=30`},
	} {
		d := decodeEntry(normal(t, c.r), 0)
		if d.Category != catIRR || d.EtcdText != c.want {
			t.Errorf("got  %s (%s)\nwant %s", d.EtcdText, d.Category, c.want)
		}
		if strings.Contains(d.EtcdText, "secret") {
			t.Errorf("password shown: %s", d.EtcdText)
		}
	}
}

func v2Bytes(method, path, val string, tm int64) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 42)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, method)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendString(b, path)
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendString(b, val)
	b = protowire.AppendTag(b, 5, protowire.VarintType)
	b = protowire.AppendVarint(b, 0)
	b = protowire.AppendTag(b, 15, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(tm))
	return b
}

// TestV2Requests: v3.5 WALs hold v2 requests, bare or wrapped in
// InternalRaftRequest.v2 (field 2, gone from the v3.7 API module); both are
// rendered in etcd-dump-logs' own layout and pass the Request filter.
func TestV2Requests(t *testing.T) {
	typ := raftpb.EntryNormal
	put := v2Bytes("PUT", "/0/members/8e9e05c52164694d/attributes", `{"name":"default"}`, 0)
	wrapped := protowire.AppendTag(nil, 2, protowire.BytesType)
	wrapped = protowire.AppendBytes(wrapped, put)
	for _, data := range [][]byte{put, wrapped} {
		d := decodeEntry(&raftpb.Entry{Type: &typ, Data: data}, 0)
		if d.Category != catRequest || d.EtcdText != `method=PUT path="/0/members/8e9e05c52164694d/attributes" val="{\"name\":\"default\"}"` {
			t.Errorf("%s: %s", d.Category, d.EtcdText)
		}
		if !passes([]filter{filterTable[2]}, d) || passes([]filter{filterTable[3]}, d) {
			t.Error("filters")
		}
	}
	d := decodeEntry(&raftpb.Entry{Type: &typ, Data: v2Bytes("SYNC", "", "", 1700000000000000000)}, 0)
	if d.EtcdText != `method=SYNC time="2023-11-14 22:13:20 +0000 UTC"` {
		t.Errorf("%s", d.EtcdText)
	}
	long := strings.Repeat("p", 200)
	d = decodeEntry(&raftpb.Entry{Type: &typ, Data: v2Bytes("DELETE", long, "", 0)}, 0)
	if d.EtcdText != `method=DELETE path="`+strings.Repeat("p", 64)+`"..."`+strings.Repeat("p", 64)+`"` {
		t.Errorf("%s", d.EtcdText)
	}
}

func TestConfChangesAndGarbage(t *testing.T) {
	cc := raftpb.ConfChangeRemoveNode
	node := uint64(0x2e)
	b, _ := proto.Marshal(&raftpb.ConfChange{Type: &cc, NodeId: &node})
	typ := raftpb.EntryConfChange
	if d := decodeEntry(&raftpb.Entry{Type: &typ, Data: b}, 0); d.EtcdText != "method=ConfChangeRemoveNode id=2e" || d.Class != "conf" {
		t.Errorf("%s", d.EtcdText)
	}
	tr := raftpb.ConfChangeTransitionJointExplicit
	add := raftpb.ConfChangeAddLearnerNode
	b, _ = proto.Marshal(&raftpb.ConfChangeV2{Transition: &tr, Changes: []*raftpb.ConfChangeSingle{{Type: &add, NodeId: &node}}})
	typ2 := raftpb.EntryConfChangeV2
	if d := decodeEntry(&raftpb.Entry{Type: &typ2, Data: b}, 0); d.EtcdText != "transition=ConfChangeTransitionJointExplicit changes=[method=ConfChangeAddLearnerNode node_id=2e]" {
		t.Errorf("%s", d.EtcdText)
	}
	norm := raftpb.EntryNormal
	for _, e := range []*raftpb.Entry{{Type: &typ, Data: []byte{0xff, 0xff}}, {Type: &norm, Data: []byte{0xff, 0xff, 0xff}}} {
		if d := decodeEntry(e, 0); d.Op != "???" || d.Err == nil || d.EtcdText != "???" {
			t.Errorf("garbage: %+v", d)
		}
	}
	bad := raftpb.EntryType(9)
	if d := decodeEntry(&raftpb.Entry{Type: &bad}, 0); d.Op != "???" {
		t.Errorf("unknown type: %+v", d)
	}
	// JSON: binary keys as base64 under key_base64.
	d := decodeEntry(normal(t, &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte{0xff}, Value: []byte("v")}}), 0)
	o := d.object()
	if v, ok := o.Get("key_base64"); !ok || v != "/w==" {
		t.Errorf("json %v", o.Keys())
	}
	_ = cli.JSON
}
