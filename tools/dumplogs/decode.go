package dumplogs

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/tools/cli"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Entry categories, named as etcd-dump-logs names its filters.
const (
	catConfChange   = "ConfigChange"
	catConfChangeV2 = "ConfigChangeV2"
	catIRR          = "InternalRaftRequest"
	catRequest      = "Request" // v2 etcdserverpb.Request
	catUnknown      = "UnknownNormal"
)

// decoded is one raft entry decoded for display.
type decoded struct {
	Class    string // "conf" or "norm", etcd-dump-logs' type column
	Category string // one of the cat* constants
	Op       string // put, range, txn, ..., noop, v2, conf_change, ???
	Fields   *fields
	// EtcdText is the data column in the etcd layout: etcd's own text for
	// conf changes and v2 requests, etckit's field rendering otherwise.
	EtcdText string
	// etcdFromFields: EtcdText was left empty (mode lazyEtcdText); it is
	// Op, then a space and Fields.text if that is not empty.
	etcdFromFields bool
	// irr is the parsed InternalRaftRequest (category catIRR), for filters.
	irr *pb.InternalRaftRequest
	// writes are the keys the entry writes (put, delete_range, and txn
	// operations of both branches), for the summary.
	writes []write
	Err    error // why the data could not be decoded (Op "???")
}

// write is a key an entry writes, with the bytes of key and value.
type write struct {
	key  []byte
	size int
}

func entryType(e *raftpb.Entry) raftpb.EntryType { return e.GetType() }

// decodeEntry decodes e; it never fails: undecodable data gives Op "???"
// with Err set.
func decodeEntry(e *raftpb.Entry, maxValue int) *decoded {
	return decodeEntryMode(e, maxValue, bothFields)
}

// decodeEntryMode is decodeEntry building only the renderings mode asks
// for (EtcdText needs textFields).
func decodeEntryMode(e *raftpb.Entry, maxValue int, mode fieldMode) *decoded {
	return decodeEntryInto(e, maxValue, mode, nil)
}

// decodeEntryInto is decodeEntryMode rendering the text into text[:0]
// (a buffer reused from entry to entry; d.Fields.text may alias it).
func decodeEntryInto(e *raftpb.Entry, maxValue int, mode fieldMode, text []byte) *decoded {
	d := &decoded{Fields: newFields(maxValue, mode)}
	d.Fields.text = text[:0]
	switch entryType(e) {
	case raftpb.EntryConfChange:
		d.Class, d.Category, d.Op = "conf", catConfChange, "conf_change"
		var cc raftpb.ConfChange
		if err := proto.Unmarshal(e.Data, &cc); err != nil {
			d.Op, d.Err, d.EtcdText = "???", err, "???"
			return d
		}
		d.EtcdText = fmt.Sprintf("method=%s id=%x", cc.GetType(), cc.GetNodeId())
		f := d.Fields
		f.enum("method", cc.GetType().String())
		f.hexID("node_id", cc.GetNodeId())
		if cc.GetId() != 0 {
			f.unum("req_id", cc.GetId())
		}
		if cc.Context != nil {
			addContext(f, cc.Context)
		}
		return d
	case raftpb.EntryConfChangeV2:
		d.Class, d.Category, d.Op = "conf", catConfChangeV2, "conf_change_v2"
		var cc raftpb.ConfChangeV2
		if err := proto.Unmarshal(e.Data, &cc); err != nil {
			d.Op, d.Err, d.EtcdText = "???", err, "???"
			return d
		}
		f := d.Fields
		f.enum("transition", cc.GetTransition().String())
		var chs []*fields
		for _, c := range cc.GetChanges() {
			g := f.child(maxValue)
			g.enum("method", c.GetType().String())
			g.hexID("node_id", c.GetNodeId())
			chs = append(chs, g)
		}
		f.list("changes", chs)
		if cc.Context != nil {
			addContext(f, cc.Context)
		}
		d.EtcdText = f.String()
		return d
	case raftpb.EntryNormal:
	default:
		d.Class, d.Category, d.Op = "????", catUnknown, "???"
		d.Err = fmt.Errorf("unknown entry type %d", entryType(e))
		d.EtcdText = "???"
		return d
	}
	d.Class = "norm"
	if len(e.Data) == 0 {
		// The leader's no-op of a new term; it parses as an empty
		// InternalRaftRequest, and etcd-dump-logs prints nothing for it.
		d.Category, d.Op = catIRR, "noop"
		d.irr = &pb.InternalRaftRequest{}
		return d
	}
	var irr pb.InternalRaftRequest
	irrErr := proto.Unmarshal(e.Data, &irr)
	if irrErr == nil {
		if v2 := unknownField(irr.ProtoReflect().GetUnknown(), 2); v2 != nil {
			// v3.5 wraps v2 requests in InternalRaftRequest.v2 (field 2,
			// no longer in the v3.7 API module).
			if r, err := engine.DecodeV2Request(v2); err == nil {
				d.Category, d.Op = catRequest, "v2"
				renderV2(d, r)
				return d
			}
			// Field 2 is not a message: with the v3.5 schema this would
			// not parse as an InternalRaftRequest, so etcd reads it as a
			// bare v2 Request (its Method is field 2).
			if r, err := engine.DecodeV2Request(e.Data); err == nil {
				d.Category, d.Op = catRequest, "v2"
				renderV2(d, r)
				return d
			}
		}
		d.Category, d.irr = catIRR, &irr
		renderIRR(d, &irr)
		if d.Fields.mode&lazyEtcdText != 0 {
			d.etcdFromFields = true
		} else if d.Fields.wantText() {
			d.EtcdText = d.Op
			if len(d.Fields.text) > 0 {
				d.EtcdText += " " + string(d.Fields.text)
			}
		}
		return d
	}
	if r, err := engine.DecodeV2Request(e.Data); err == nil {
		d.Category, d.Op = catRequest, "v2"
		renderV2(d, r)
		return d
	}
	d.Category, d.Op, d.Err, d.EtcdText = catUnknown, "???", irrErr, "???"
	return d
}

// addContext renders a conf change context: etcd's member JSON when it
// parses, the quoted bytes otherwise.
func addContext(f *fields, ctx []byte) {
	var m struct {
		ID        uint64   `json:"id"`
		PeerURLs  []string `json:"peerURLs"`
		Name      string   `json:"name"`
		IsLearner bool     `json:"isLearner"`
		IsPromote bool     `json:"isPromote"`
	}
	if json.Unmarshal(ctx, &m) != nil {
		f.value("context", ctx)
		return
	}
	g := f.child(0)
	g.hexID("id", m.ID)
	if m.Name != "" {
		g.str("name", m.Name)
	}
	g.strs("peer_urls", m.PeerURLs)
	if m.IsLearner {
		g.flag("is_learner")
	}
	if m.IsPromote {
		g.flag("is_promote")
	}
	f.sub("member", g)
}

// unknownField returns the bytes of the first length-delimited field num
// in raw (unknown fields of a message), or nil.
func unknownField(raw []byte, num protowire.Number) []byte {
	for len(raw) > 0 {
		n, typ, l := protowire.ConsumeTag(raw)
		if l < 0 {
			return nil
		}
		raw = raw[l:]
		l = protowire.ConsumeFieldValue(n, typ, raw)
		if l < 0 {
			return nil
		}
		if n == num && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(raw)
			if v == nil {
				v = []byte{}
			}
			return v
		}
		raw = raw[l:]
	}
	return nil
}

func header(f *fields, h *pb.RequestHeader, legacyID uint64) {
	if h != nil {
		f.unum("req_id", h.ID)
		if h.Username != "" {
			f.str("user", h.Username)
		}
		if h.AuthRevision != 0 {
			f.unum("auth_revision", h.AuthRevision)
		}
	} else if legacyID != 0 {
		f.unum("req_id", legacyID)
	}
}

func renderIRR(d *decoded, r *pb.InternalRaftRequest) {
	f := d.Fields
	mv := f.maxValue
	op := func(name string) { d.Op = name }
	switch {
	case r.Put != nil:
		op("put")
		renderPut(f, r.Put)
		d.writes = append(d.writes, write{r.Put.Key, len(r.Put.Key) + len(r.Put.Value)})
	case r.Range != nil:
		op("range")
		renderRange(f, r.Range)
	case r.DeleteRange != nil:
		op("delete_range")
		renderDelete(f, r.DeleteRange)
		d.writes = append(d.writes, write{r.DeleteRange.Key, len(r.DeleteRange.Key)})
	case r.Txn != nil:
		op("txn")
		d.writes = renderTxn(f, r.Txn, d.writes)
	case r.Compaction != nil:
		op("compaction")
		f.num("revision", r.Compaction.Revision)
		if r.Compaction.Physical {
			f.flag("physical")
		}
	case r.LeaseGrant != nil:
		op("lease_grant")
		f.hexID("id", uint64(r.LeaseGrant.ID))
		f.num("ttl", r.LeaseGrant.TTL)
	case r.LeaseRevoke != nil:
		op("lease_revoke")
		f.hexID("id", uint64(r.LeaseRevoke.ID))
	case r.LeaseCheckpoint != nil:
		op("lease_checkpoint")
		var cs []*fields
		for _, c := range r.LeaseCheckpoint.Checkpoints {
			g := f.child(mv)
			g.hexID("id", uint64(c.ID))
			g.num("remaining_ttl", c.Remaining_TTL)
			cs = append(cs, g)
		}
		f.list("checkpoints", cs)
	case r.Alarm != nil:
		op("alarm")
		f.enum("action", r.Alarm.Action.String())
		f.hexID("member_id", r.Alarm.MemberID)
		f.enum("alarm", r.Alarm.Alarm.String())
	case r.AuthEnable != nil:
		op("auth_enable")
	case r.AuthDisable != nil:
		op("auth_disable")
	case r.AuthStatus != nil:
		op("auth_status")
	case r.Authenticate != nil:
		op("authenticate")
		f.str("name", r.Authenticate.Name)
		if r.Authenticate.Password != "" {
			f.enum("password", redacted)
		}
		if r.Authenticate.SimpleToken != "" {
			f.enum("simple_token", redacted)
		}
	case r.AuthUserAdd != nil:
		op("auth_user_add")
		f.str("name", r.AuthUserAdd.Name)
		if r.AuthUserAdd.Password != "" {
			f.enum("password", redacted)
		}
		if r.AuthUserAdd.HashedPassword != "" {
			f.enum("hashed_password", redacted)
		}
		if r.AuthUserAdd.Options != nil && r.AuthUserAdd.Options.NoPassword {
			f.flag("no_password")
		}
	case r.AuthUserDelete != nil:
		op("auth_user_delete")
		f.str("name", r.AuthUserDelete.Name)
	case r.AuthUserGet != nil:
		op("auth_user_get")
		f.str("name", r.AuthUserGet.Name)
	case r.AuthUserChangePassword != nil:
		op("auth_user_change_password")
		f.str("name", r.AuthUserChangePassword.Name)
		if r.AuthUserChangePassword.Password != "" {
			f.enum("password", redacted)
		}
		if r.AuthUserChangePassword.HashedPassword != "" {
			f.enum("hashed_password", redacted)
		}
	case r.AuthUserGrantRole != nil:
		op("auth_user_grant_role")
		f.str("user", r.AuthUserGrantRole.User)
		f.str("role", r.AuthUserGrantRole.Role)
	case r.AuthUserRevokeRole != nil:
		op("auth_user_revoke_role")
		f.str("name", r.AuthUserRevokeRole.Name)
		f.str("role", r.AuthUserRevokeRole.Role)
	case r.AuthUserList != nil:
		op("auth_user_list")
	case r.AuthRoleList != nil:
		op("auth_role_list")
	case r.AuthRoleAdd != nil:
		op("auth_role_add")
		f.str("name", r.AuthRoleAdd.Name)
	case r.AuthRoleDelete != nil:
		op("auth_role_delete")
		f.str("role", r.AuthRoleDelete.Role)
	case r.AuthRoleGet != nil:
		op("auth_role_get")
		f.str("role", r.AuthRoleGet.Role)
	case r.AuthRoleGrantPermission != nil:
		op("auth_role_grant_permission")
		f.str("name", r.AuthRoleGrantPermission.Name)
		if p := r.AuthRoleGrantPermission.Perm; p != nil {
			f.enum("perm", p.PermType.String())
			f.key("key", p.Key)
			if len(p.RangeEnd) > 0 {
				f.key("range_end", p.RangeEnd)
			}
		}
	case r.AuthRoleRevokePermission != nil:
		op("auth_role_revoke_permission")
		f.str("role", r.AuthRoleRevokePermission.Role)
		f.key("key", r.AuthRoleRevokePermission.Key)
		if len(r.AuthRoleRevokePermission.RangeEnd) > 0 {
			f.key("range_end", r.AuthRoleRevokePermission.RangeEnd)
		}
	case r.ClusterVersionSet != nil:
		op("cluster_version_set")
		f.str("ver", r.ClusterVersionSet.Ver)
	case r.ClusterMemberAttrSet != nil:
		op("cluster_member_attr_set")
		f.hexID("member_id", r.ClusterMemberAttrSet.Member_ID)
		if a := r.ClusterMemberAttrSet.MemberAttributes; a != nil {
			f.str("name", a.Name)
			f.strs("client_urls", a.ClientUrls)
		}
	case r.DowngradeInfoSet != nil:
		op("downgrade_info_set")
		if r.DowngradeInfoSet.Enabled {
			f.flag("enabled")
		}
		f.str("ver", r.DowngradeInfoSet.Ver)
	case r.DowngradeVersionTest != nil:
		op("downgrade_version_test")
		f.str("ver", r.DowngradeVersionTest.Ver)
	default:
		op("empty")
	}
	header(f, r.Header, r.ID)
	if u := r.ProtoReflect().GetUnknown(); len(u) > 0 {
		f.value("unknown_fields", u)
	}
}

// redacted replaces secrets (etcd-dump-logs masks only the change-password
// password; etckit masks every password, hash and token).
const redacted = "<redacted>"

func renderPut(f *fields, p *pb.PutRequest) {
	f.key("key", p.Key)
	f.value("value", p.Value)
	if p.Lease != 0 {
		f.hexID("lease", uint64(p.Lease))
	}
	if p.PrevKv {
		f.flag("prev_kv")
	}
	if p.IgnoreValue {
		f.flag("ignore_value")
	}
	if p.IgnoreLease {
		f.flag("ignore_lease")
	}
}

func renderRange(f *fields, r *pb.RangeRequest) {
	f.key("key", r.Key)
	if len(r.RangeEnd) > 0 {
		f.key("range_end", r.RangeEnd)
	}
	for _, x := range []struct {
		n string
		v int64
	}{{"limit", r.Limit}, {"revision", r.Revision}, {"min_mod_revision", r.MinModRevision},
		{"max_mod_revision", r.MaxModRevision}, {"min_create_revision", r.MinCreateRevision},
		{"max_create_revision", r.MaxCreateRevision}} {
		if x.v != 0 {
			f.num(x.n, x.v)
		}
	}
	if r.SortOrder != pb.RangeRequest_NONE {
		f.enum("sort_order", r.SortOrder.String())
		f.enum("sort_target", r.SortTarget.String())
	}
	if r.Serializable {
		f.flag("serializable")
	}
	if r.KeysOnly {
		f.flag("keys_only")
	}
	if r.CountOnly {
		f.flag("count_only")
	}
}

func renderDelete(f *fields, r *pb.DeleteRangeRequest) {
	f.key("key", r.Key)
	if len(r.RangeEnd) > 0 {
		f.key("range_end", r.RangeEnd)
	}
	if r.PrevKv {
		f.flag("prev_kv")
	}
}

func renderTxn(f *fields, t *pb.TxnRequest, writes []write) []write {
	var cmps []*fields
	for _, c := range t.Compare {
		g := f.child(f.maxValue)
		g.enum("target", c.Target.String())
		g.key("key", c.Key)
		if len(c.RangeEnd) > 0 {
			g.key("range_end", c.RangeEnd)
		}
		g.enum("result", c.Result.String())
		switch u := c.TargetUnion.(type) {
		case *pb.Compare_Version:
			g.num("version", u.Version)
		case *pb.Compare_CreateRevision:
			g.num("create_revision", u.CreateRevision)
		case *pb.Compare_ModRevision:
			g.num("mod_revision", u.ModRevision)
		case *pb.Compare_Value:
			g.value("value", u.Value)
		case *pb.Compare_Lease:
			g.hexID("lease", uint64(u.Lease))
		}
		cmps = append(cmps, g)
	}
	f.list("compare", cmps)
	ops := func(name string, rs []*pb.RequestOp) {
		var gs []*fields
		for _, r := range rs {
			g := f.child(f.maxValue)
			switch u := r.Request.(type) {
			case *pb.RequestOp_RequestPut:
				g.word("put")
				renderPut(g, u.RequestPut)
				g.setOp("put")
				writes = append(writes, write{u.RequestPut.Key, len(u.RequestPut.Key) + len(u.RequestPut.Value)})
			case *pb.RequestOp_RequestRange:
				g.word("range")
				renderRange(g, u.RequestRange)
				g.setOp("range")
			case *pb.RequestOp_RequestDeleteRange:
				g.word("delete_range")
				renderDelete(g, u.RequestDeleteRange)
				g.setOp("delete_range")
				writes = append(writes, write{u.RequestDeleteRange.Key, len(u.RequestDeleteRange.Key)})
			case *pb.RequestOp_RequestTxn:
				g.word("txn")
				writes = renderTxn(g, u.RequestTxn, writes)
				g.setOp("txn")
			default:
				g.word("empty")
				g.setOp("empty")
			}
			gs = append(gs, g)
		}
		f.list(name, gs)
	}
	ops("success", t.Success)
	ops("failure", t.Failure)
	return writes
}

func renderV2(d *decoded, r *engine.V2Request) {
	f := d.Fields
	f.str("method", r.Method)
	// etcd-dump-logs' own layout for v2 requests (printRequest).
	switch r.Method {
	case "":
		d.EtcdText = "noop"
	case "SYNC":
		d.EtcdText = fmt.Sprintf("method=SYNC time=%q", time.Unix(0, r.Time).UTC())
	case "QGET", "DELETE":
		d.EtcdText = fmt.Sprintf("method=%s path=%s", r.Method, excerpt(r.Path, 64, 64))
	default:
		d.EtcdText = fmt.Sprintf("method=%s path=%s val=%s", r.Method, excerpt(r.Path, 64, 64), excerpt(r.Val, 128, 0))
	}
	if r.Path != "" {
		f.key("path", []byte(r.Path))
	}
	if r.Val != "" {
		f.value("val", []byte(r.Val))
	}
	if r.Method == "SYNC" || r.Time != 0 {
		f.add("time", strconv.Quote(time.Unix(0, r.Time).UTC().Format(time.RFC3339Nano)), r.Time)
	}
	if r.PrevValue != "" {
		f.value("prev_value", []byte(r.PrevValue))
	}
	if r.PrevIndex != 0 {
		f.unum("prev_index", r.PrevIndex)
	}
	if r.HasPrevExist {
		f.add("prev_exist", strconv.FormatBool(r.PrevExist), r.PrevExist)
	}
	if r.Expiration != 0 {
		f.num("expiration", r.Expiration)
	}
	for _, b := range []struct {
		n string
		v bool
	}{{"dir", r.Dir}, {"wait", r.Wait}, {"recursive", r.Recursive}, {"sorted", r.Sorted}, {"quorum", r.Quorum}, {"stream", r.Stream}, {"refresh", r.Refresh}} {
		if b.v {
			f.flag(b.n)
		}
	}
	if r.Since != 0 {
		f.unum("since", r.Since)
	}
	f.unum("req_id", r.ID)
	if r.Method == "PUT" || r.Method == "POST" || r.Method == "DELETE" {
		d.writes = append(d.writes, write{[]byte(r.Path), len(r.Path) + len(r.Val)})
	}
}

// excerpt is etcd-dump-logs' abbreviation of long v2 strings.
func excerpt(str string, pre, suf int) string {
	if pre+suf > len(str) {
		return fmt.Sprintf("%q", str)
	}
	return fmt.Sprintf("%q...%q", str[:pre], str[len(str)-suf:])
}

// entryObject is the JSON form of a decoded entry's request.
func (d *decoded) object() *cli.Object { return &d.Fields.obj }
