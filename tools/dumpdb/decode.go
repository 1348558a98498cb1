package dumpdb

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/etckit/etckit/auth"
	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/tools/cli"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// quote renders bytes Go-quoted, as etcd-dump-db's %q does.
func quote(b []byte) string { return strconv.Quote(string(b)) }

// setBytes sets name to b as a JSON string when b is valid UTF-8, else
// name_base64 to its base64.
func setBytes(o *cli.Object, name string, b []byte) {
	if utf8.Valid(b) {
		o.Set(name, string(b))
		return
	}
	o.Set(name+"_base64", base64.StdEncoding.EncodeToString(b))
}

// K8s is the identity of a Kubernetes object stored as protobuf
// ("k8s\x00" + runtime.Unknown).
type K8s struct {
	APIVersion, Kind, Namespace, Name string
}

func (k K8s) String() string {
	s := "k8s"
	if k.APIVersion != "" {
		s += " " + k.APIVersion
	}
	if k.Kind != "" {
		s += " " + k.Kind
	}
	switch {
	case k.Namespace != "" && k.Name != "":
		s += " " + k.Namespace + "/" + k.Name
	case k.Name != "":
		s += " " + k.Name
	}
	return s
}

func (k K8s) object() *cli.Object {
	return (&cli.Object{}).Set("apiVersion", k.APIVersion).Set("kind", k.Kind).Set("namespace", k.Namespace).Set("name", k.Name)
}

const k8sMagic = "k8s\x00"

// fields walks the length-delimited fields of a protobuf message, calling
// fn for each; other wire types are skipped. It returns false on bytes that
// are not a protobuf message.
func fields(b []byte, fn func(num protowire.Number, v []byte)) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return false
			}
			fn(num, v)
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return false
		}
		b = b[m:]
	}
	return true
}

// DecodeK8s reads apiVersion, kind, namespace and name from a Kubernetes
// protobuf value (runtime.Unknown{typeMeta=1{apiVersion=1, kind=2}, raw=2}
// after "k8s\x00"; raw's field 1 is the object's ObjectMeta{name=1,
// namespace=3} for every built-in kind). ok is false for anything else; it
// never fails on odd bytes.
func DecodeK8s(v []byte) (k K8s, ok bool) {
	if !strings.HasPrefix(string(v), k8sMagic) {
		return k, false
	}
	var raw []byte
	if !fields(v[len(k8sMagic):], func(num protowire.Number, b []byte) {
		switch num {
		case 1:
			fields(b, func(n protowire.Number, s []byte) {
				switch n {
				case 1:
					k.APIVersion = string(s)
				case 2:
					k.Kind = string(s)
				}
			})
		case 2:
			raw = b
		}
	}) {
		return K8s{}, true
	}
	fields(raw, func(num protowire.Number, b []byte) {
		if num != 1 {
			return
		}
		fields(b, func(n protowire.Number, s []byte) {
			switch n {
			case 1:
				k.Name = string(s)
			case 3:
				k.Namespace = string(s)
			}
		})
	})
	return k, true
}

// k8sSuffix is " <k8s v1 Pod ns/name>" for a Kubernetes value, else "".
func k8sSuffix(v []byte) string {
	if k, ok := DecodeK8s(v); ok {
		return " <" + k.String() + ">"
	}
	return ""
}

// Decoded is one bucket pair rendered.
type Decoded struct {
	Etcd  string      // etcd-dump-db's --decode line
	Key   string      // table KEY column
	Value string      // table VALUE column
	JSON  *cli.Object // fields of the json object (after kind, bucket)
	Err   error       // the value (or key) does not decode
}

// defaultLine is etcd-dump-db's line for a pair it does not decode.
func defaultLine(k, v []byte) string { return fmt.Sprintf("key=%q, value=%q", k, v) }

func raw(k, v []byte, err error) Decoded {
	o := &cli.Object{}
	setBytes(o, "key", k)
	setBytes(o, "value", v)
	return Decoded{Etcd: defaultLine(k, v), Key: quote(k), Value: quote(v), JSON: o, Err: err}
}

// Decode renders a pair of bucket with etcd-aware decoding. It never
// panics: a pair that does not decode comes back raw with Err set.
func Decode(bucket string, k, v []byte) Decoded {
	switch bucket {
	case "key":
		return decodeKey(k, v)
	case "meta":
		return decodeMeta(k, v)
	case "lease":
		return decodeLease(k, v)
	case "auth":
		return decodeAuth(k, v)
	case "authUsers":
		return decodeUser(k, v)
	case "authRoles":
		return decodeRole(k, v)
	case "members":
		return decodeMember(k, v)
	case "alarm":
		return decodeAlarm(k, v)
	}
	return raw(k, v, nil)
}

func decodeKey(k, v []byte) Decoded {
	r, tomb, err := mvcc.ParseRevKey(k)
	if err != nil {
		return raw(k, v, err)
	}
	kv, err := mvcc.DecodeKeyValue(v)
	if err != nil {
		return raw(k, v, err)
	}
	d := Decoded{
		Etcd: fmt.Sprintf("rev={Revision:{Main:%d Sub:%d} tombstone:%t}, value=[key %q | val %q | created %d | mod %d | ver %d]",
			r.Main, r.Sub, tomb, kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version) + k8sSuffix(kv.Value),
		Key: revString(r, tomb),
	}
	if tomb {
		d.Value = "delete " + quote(kv.Key)
	} else {
		d.Value = fmt.Sprintf("put %s = %s create=%d mod=%d ver=%d lease=%x", quote(kv.Key), quote(kv.Value), kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease) + k8sSuffix(kv.Value)
	}
	o := (&cli.Object{}).Set("rev", r.Main).Set("sub", r.Sub).Set("tombstone", tomb)
	setBytes(o, "key", kv.Key)
	o.Set("create_revision", kv.CreateRevision).Set("mod_revision", kv.ModRevision).Set("version", kv.Version).Set("lease", kv.Lease)
	setBytes(o, "value", kv.Value)
	if k8, ok := DecodeK8s(kv.Value); ok {
		o.Set("k8s", k8.object())
	}
	d.JSON = o
	if !tomb && kv.ModRevision != r.Main {
		d.Err = fmt.Errorf("mod_revision %d differs from the revision %d of its key", kv.ModRevision, r.Main)
	}
	return d
}

// revString is "main_sub" with a "t" for a tombstone.
func revString(r mvcc.Revision, tomb bool) string {
	s := fmt.Sprintf("%d_%d", r.Main, r.Sub)
	if tomb {
		s += "t"
	}
	return s
}

func decodeMeta(k, v []byte) Decoded {
	d := raw(k, v, nil)
	o := (&cli.Object{}).Set("key", string(k))
	switch string(k) {
	case mvcc.MetaConsistentIndex, mvcc.MetaTerm:
		n, err := mvcc.DecodeMetaUint64(string(k), v)
		if err != nil {
			d.Err = err
			return d
		}
		d.Etcd = fmt.Sprintf("key=%q, value=%v", k, n)
		d.Value = strconv.FormatUint(n, 10)
		d.JSON = o.Set("value", n)
	case mvcc.MetaScheduledCompactRev, mvcc.MetaFinishedCompactRev:
		r, _, err := mvcc.ParseRevKey(v)
		if err != nil {
			d.Err = err
			return d
		}
		d.Etcd = fmt.Sprintf("key=%q, value={%d %d}", k, r.Main, r.Sub)
		d.Value = strconv.FormatInt(r.Main, 10)
		d.JSON = o.Set("value", r.Main)
	case mvcc.MetaConfState:
		var cs map[string]any
		if err := json.Unmarshal(v, &cs); err != nil {
			d.Err = fmt.Errorf("confState is not JSON: %v", err)
			return d
		}
		d.JSON = o.Set("value", json.RawMessage(v))
		d.Value = string(v)
	default:
		if utf8.Valid(v) {
			d.Value = string(v)
		}
	}
	return d
}

func decodeLease(k, v []byte) Decoded {
	l, err := mvcc.UnmarshalLeaseRecord(v)
	if err != nil {
		return raw(k, v, err)
	}
	d := Decoded{
		Etcd:  fmt.Sprintf("lease ID=%016x, TTL=%ds, remaining TTL=%ds", l.ID, l.TTL, l.RemainingTTL),
		Key:   fmt.Sprintf("%016x", l.ID),
		Value: fmt.Sprintf("TTL=%ds remaining=%ds", l.TTL, l.RemainingTTL),
		JSON:  (&cli.Object{}).Set("id", fmt.Sprintf("%016x", l.ID)).Set("ttl", l.TTL).Set("remaining_ttl", l.RemainingTTL),
	}
	if len(k) != 8 {
		d.Err = fmt.Errorf("lease key is %d bytes, want 8", len(k))
		d.Key = quote(k)
	} else if id := int64(binary.BigEndian.Uint64(k)); id != l.ID {
		d.Err = fmt.Errorf("lease key %016x holds lease ID %016x", id, l.ID)
	}
	return d
}

func decodeAuth(k, v []byte) Decoded {
	d := raw(k, v, nil)
	d.Etcd = fmt.Sprintf("key=%q, value=%v", k, v)
	o := (&cli.Object{}).Set("key", string(k))
	switch string(k) {
	case auth.KeyAuthRevision:
		n, err := auth.DecodeRevision(v)
		if err != nil {
			d.Err = err
			return d
		}
		d.Etcd = fmt.Sprintf("key=%q, value=%v", k, n)
		d.Value = strconv.FormatUint(n, 10)
		d.JSON = o.Set("value", n)
	case auth.KeyAuthEnabled:
		on, err := auth.DecodeEnabled(v)
		if err != nil {
			d.Err = err
			return d
		}
		d.Value = strconv.FormatBool(on)
		d.JSON = o.Set("value", on)
	}
	return d
}

func decodeUser(k, v []byte) Decoded {
	u, err := auth.DecodeUser(k, v)
	if err != nil {
		return raw(k, v, err)
	}
	roles := u.GetRoles()
	if roles == nil {
		roles = []string{}
	}
	np := u.GetOptions().GetNoPassword()
	d := Decoded{
		Etcd:  fmt.Sprintf("user=%q, roles=%q, option={no_password:%t}", u.GetName(), roles, np),
		Key:   quote(k),
		Value: fmt.Sprintf("user=%q roles=%q no_password=%t password=<redacted>", u.GetName(), roles, np),
	}
	o := &cli.Object{}
	setBytes(o, "user", u.GetName())
	d.JSON = o.Set("roles", roles).Set("no_password", np)
	return d
}

var permNames = map[authpb.Permission_Type]string{authpb.Permission_READ: "READ", authpb.Permission_WRITE: "WRITE", authpb.Permission_READWRITE: "READWRITE"}

func decodeRole(k, v []byte) Decoded {
	r, err := auth.DecodeRole(k, v)
	if err != nil {
		return raw(k, v, err)
	}
	var parts []string
	perms := []*cli.Object{}
	for _, p := range r.GetKeyPermission() {
		name, ok := permNames[p.GetPermType()]
		if !ok {
			name = strconv.Itoa(int(p.GetPermType()))
		}
		parts = append(parts, fmt.Sprintf("{%s %q %q}", name, p.GetKey(), p.GetRangeEnd()))
		po := (&cli.Object{}).Set("type", name)
		setBytes(po, "key", p.GetKey())
		setBytes(po, "range_end", p.GetRangeEnd())
		perms = append(perms, po)
	}
	d := Decoded{
		Etcd:  fmt.Sprintf("role=%q, keyPermission=[%s]", r.GetName(), strings.Join(parts, " ")),
		Key:   quote(k),
		Value: "[" + strings.Join(parts, " ") + "]",
	}
	o := &cli.Object{}
	setBytes(o, "role", r.GetName())
	d.JSON = o.Set("permissions", perms)
	return d
}

// memberJSON is the value of the members bucket.
type memberJSON struct {
	ID         uint64   `json:"id"`
	PeerURLs   []string `json:"peerURLs"`
	IsLearner  bool     `json:"isLearner"`
	Name       string   `json:"name"`
	ClientURLs []string `json:"clientURLs"`
}

func decodeMember(k, v []byte) Decoded {
	d := raw(k, v, nil)
	var m memberJSON
	if err := json.Unmarshal(v, &m); err != nil {
		d.Err = fmt.Errorf("not member JSON: %v", err)
		return d
	}
	if want := strconv.FormatUint(m.ID, 16); want != string(k) {
		d.Err = fmt.Errorf("member key %q holds member id %s", k, want)
	}
	d.Key = string(k)
	d.Value = fmt.Sprintf("name=%q peerURLs=%q clientURLs=%q learner=%t", m.Name, m.PeerURLs, m.ClientURLs, m.IsLearner)
	d.JSON = (&cli.Object{}).Set("id", fmt.Sprintf("%x", m.ID)).Set("name", m.Name).Set("peer_urls", nonNil(m.PeerURLs)).
		Set("client_urls", nonNil(m.ClientURLs)).Set("is_learner", m.IsLearner)
	return d
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func decodeAlarm(k, v []byte) Decoded {
	d := raw(k, v, nil)
	var a pb.AlarmMember
	if err := proto.Unmarshal(k, &a); err != nil {
		d.Err = fmt.Errorf("alarm key is not an AlarmMember: %v", err)
		return d
	}
	d.Key = fmt.Sprintf("member=%x", a.GetMemberID())
	d.Value = a.GetAlarm().String()
	d.JSON = (&cli.Object{}).Set("member_id", fmt.Sprintf("%x", a.GetMemberID())).Set("alarm", a.GetAlarm().String())
	return d
}
