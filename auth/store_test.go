package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"path/filepath"
	"testing"

	"github.com/etckit/etckit/mvcc"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"golang.org/x/crypto/bcrypt"
)

func openTestStore(t *testing.T) (*Store, *mvcc.Backend) {
	t.Helper()
	be, err := mvcc.OpenBackend(filepath.Join(t.TempDir(), "db"), mvcc.BackendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	s, err := Open(be, Options{BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	return s, be
}

// apply applies r as user (header identity), failing the test on a
// storage error.
func apply(t *testing.T, s *Store, user string, r *pb.InternalRaftRequest) error {
	t.Helper()
	r.Header = &pb.RequestHeader{ID: 1, Username: user, AuthRevision: s.Revision()}
	_, reqErr, fatal := s.Apply(r, 1, 1)
	if fatal != nil {
		t.Fatal(fatal)
	}
	return reqErr
}

func mustApply(t *testing.T, s *Store, user string, r *pb.InternalRaftRequest) {
	t.Helper()
	if err := apply(t, s, user, r); err != nil {
		t.Fatalf("%v: %v", r, err)
	}
}

func hashed(t *testing.T, pw string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(h)
}

func TestPermissionRanges(t *testing.T) {
	// AUTH.md §3.3: which grants etcd accepts.
	for _, c := range []struct {
		key, end string
		ok       bool
	}{
		{"a", "", true}, {"a", "b", true}, {"a", "a", false}, {"b", "a", false}, {"", "x", false},
		{"", "", false}, {"\x00", "", true}, {"a", "\x00", true}, {"\x00", "\x00", true},
	} {
		if got := validPermissionRange([]byte(c.key), []byte(c.end)); got != c.ok {
			t.Errorf("validPermissionRange(%q, %q) = %v, want %v", c.key, c.end, got, c.ok)
		}
	}
	// §3.4 coverage examples.
	set := func(ivs ...[2]string) intervals {
		var s intervals
		for _, iv := range ivs {
			s = append(s, interval{[]byte(iv[0]), []byte(iv[1])})
		}
		s.sort()
		return s
	}
	for _, c := range []struct {
		name     string
		set      intervals
		key, end string
		want     bool
	}{
		{"gap", set([2]string{"a", "c"}, [2]string{"x", "z"}), "a", "z", false},
		{"overlapping", set([2]string{"a", "f"}, [2]string{"c", "d"}, [2]string{"f", "z"}), "a", "z", true},
		{"open end covers open end", set([2]string{"\x00", ""}), "a", "\x00", true},
		{"bounded does not cover open end", set([2]string{"a", "z"}), "a", "\x00", false},
		{"starts too late", set([2]string{"b", "z"}), "a", "c", false},
		{"point in range", set([2]string{"a", "c"}), "b", "", true},
		{"point outside", set([2]string{"a", "c"}), "c", "", false},
		{"point grant as range", set([2]string{"k", "k\x00"}), "k", "k\x00", true},
		{"prefix end not granted", set([2]string{"/p/", "/p0"}), "/p0", "", false},
		{"empty set", nil, "a", "", false},
	} {
		if got := c.set.permitted([]byte(c.key), []byte(c.end)); got != c.want {
			t.Errorf("%s: permitted(%q, %q) = %v, want %v", c.name, c.key, c.end, got, c.want)
		}
	}
}

func TestRootRulesAndRevisions(t *testing.T) {
	s, _ := openTestStore(t)
	if s.Revision() != 1 {
		t.Fatalf("a new store has revision %d, want 1", s.Revision())
	}
	if err := apply(t, s, "", &pb.InternalRaftRequest{AuthEnable: &pb.AuthEnableRequest{}}); !errors.Is(err, ErrRootUserNotExist) {
		t.Fatalf("enable without root: %v", err)
	}
	mustApply(t, s, "", &pb.InternalRaftRequest{AuthUserAdd: &pb.AuthUserAddRequest{Name: "root", HashedPassword: hashed(t, "rootpw")}})
	if err := apply(t, s, "", &pb.InternalRaftRequest{AuthEnable: &pb.AuthEnableRequest{}}); !errors.Is(err, ErrRootRoleNotExist) {
		t.Fatalf("enable without the root role: %v", err)
	}
	// root needs no role "root" in authRoles.
	mustApply(t, s, "", &pb.InternalRaftRequest{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}})
	mustApply(t, s, "", &pb.InternalRaftRequest{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}})
	if s.Revision() != 3 {
		t.Fatalf("revision %d after user add and one effective grant, want 3", s.Revision())
	}
	mustApply(t, s, "", &pb.InternalRaftRequest{AuthEnable: &pb.AuthEnableRequest{}})
	if !s.Enabled() || s.Revision() != 3 {
		t.Fatalf("enabled=%v revision=%d after enable, want true 3", s.Enabled(), s.Revision())
	}
	for _, c := range []struct {
		user string
		r    *pb.InternalRaftRequest
		want error
	}{
		{"", &pb.InternalRaftRequest{AuthUserList: &pb.AuthUserListRequest{}}, ErrUserEmpty},
		{"nobody", &pb.InternalRaftRequest{AuthRoleAdd: &pb.AuthRoleAddRequest{Name: "r"}}, ErrUserNotFound},
		{"root", &pb.InternalRaftRequest{AuthUserDelete: &pb.AuthUserDeleteRequest{Name: "root"}}, ErrInvalidAuthMgmt},
		{"root", &pb.InternalRaftRequest{AuthUserRevokeRole: &pb.AuthUserRevokeRoleRequest{Name: "root", Role: "root"}}, ErrInvalidAuthMgmt},
		{"root", &pb.InternalRaftRequest{AuthRoleDelete: &pb.AuthRoleDeleteRequest{Role: "root"}}, ErrInvalidAuthMgmt},
		{"root", &pb.InternalRaftRequest{AuthRoleGet: &pb.AuthRoleGetRequest{Role: "root"}}, ErrRoleNotFound},
		{"root", &pb.InternalRaftRequest{AuthUserAdd: &pb.AuthUserAddRequest{Name: "root"}}, ErrUserAlreadyExist},
		{"root", &pb.InternalRaftRequest{AuthUserAdd: &pb.AuthUserAddRequest{}}, ErrUserEmpty},
		{"root", &pb.InternalRaftRequest{AuthRoleAdd: &pb.AuthRoleAddRequest{}}, ErrRoleEmpty},
		{"root", &pb.InternalRaftRequest{AuthRoleGrantPermission: &pb.AuthRoleGrantPermissionRequest{Name: "x"}}, ErrPermissionNotGiven},
	} {
		before := s.Revision()
		if err := apply(t, s, c.user, c.r); !errors.Is(err, c.want) {
			t.Errorf("%v as %q: %v, want %v", c.r, c.user, err, c.want)
		}
		if s.Revision() != before {
			t.Errorf("%v: a refused request moved the revision %d -> %d", c.r, before, s.Revision())
		}
	}
	mustApply(t, s, "root", &pb.InternalRaftRequest{AuthDisable: &pb.AuthDisableRequest{}})
	if s.Enabled() || s.Revision() != 4 {
		t.Fatalf("enabled=%v revision=%d after disable, want false 4", s.Enabled(), s.Revision())
	}
}

// TestBucketBytes pins the stored values to the bytes etcd writes
// (AUTH.md §3.2, checked there against etcd's own marshalling).
func TestBucketBytes(t *testing.T) {
	s, be := openTestStore(t)
	mustApply(t, s, "", &pb.InternalRaftRequest{AuthUserAdd: &pb.AuthUserAddRequest{Name: "cn", Options: &authpb.UserAddOptions{NoPassword: true}}})
	mustApply(t, s, "", &pb.InternalRaftRequest{AuthRoleAdd: &pb.AuthRoleAddRequest{Name: "r"}})
	for _, p := range []*authpb.Permission{
		{PermType: authpb.Permission_WRITE, Key: []byte("z"), RangeEnd: []byte{0}},
		{PermType: authpb.Permission_READ, Key: []byte("a"), RangeEnd: []byte("b")},
		{PermType: authpb.Permission_READWRITE, Key: []byte("foo")},
	} {
		mustApply(t, s, "", &pb.InternalRaftRequest{AuthRoleGrantPermission: &pb.AuthRoleGrantPermissionRequest{Name: "r", Perm: p}})
	}
	mustApply(t, s, "", &pb.InternalRaftRequest{AuthRoleAdd: &pb.AuthRoleAddRequest{Name: "root"}})
	if err := be.ForceCommit(); err != nil {
		t.Fatal(err)
	}
	v := be.View()
	defer v.Release()
	for _, c := range []struct{ bucket, key, hex string }{
		{BucketAuthUsers, "cn", "0a02636e22020801"},
		{BucketAuthRoles, "r", "0a0172" + "1206" + "120161" + "1a0162" + "1207" + "0802" + "1203666f6f" + "1208" + "0801" + "12017a" + "1a0100"},
		{BucketAuthRoles, "root", "0a04726f6f74"},
		{BucketAuth, KeyAuthRevision, "0000000000000007"},
	} {
		got, _ := v.Get([]byte(c.bucket), []byte(c.key))
		if hex.EncodeToString(got) != c.hex {
			t.Errorf("%s/%s = %x, want %s", c.bucket, c.key, got, c.hex)
		}
	}
	if got, ok := v.Get([]byte(BucketAuth), []byte(KeyAuthEnabled)); ok {
		t.Errorf("authEnabled written (%x) though auth was never enabled", got)
	}
}

func TestPermissionsThroughRoles(t *testing.T) {
	s, _ := openTestStore(t)
	for _, r := range []*pb.InternalRaftRequest{
		{AuthUserAdd: &pb.AuthUserAddRequest{Name: "root", HashedPassword: hashed(t, "r")}},
		{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}},
		{AuthUserAdd: &pb.AuthUserAddRequest{Name: "alice", HashedPassword: hashed(t, "apw")}},
		{AuthRoleAdd: &pb.AuthRoleAddRequest{Name: "r1"}},
		{AuthRoleGrantPermission: &pb.AuthRoleGrantPermissionRequest{Name: "r1", Perm: &authpb.Permission{PermType: authpb.Permission_READWRITE, Key: []byte("foo")}}},
		{AuthRoleGrantPermission: &pb.AuthRoleGrantPermissionRequest{Name: "r1", Perm: &authpb.Permission{PermType: authpb.Permission_READ, Key: []byte("/app/"), RangeEnd: []byte("/app0")}}},
		{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "alice", Role: "r1"}},
		{AuthEnable: &pb.AuthEnableRequest{}},
	} {
		mustApply(t, s, "root", r)
	}
	alice := &AuthInfo{Username: "alice", Revision: s.Revision()}
	check := func(name string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) && !(err == nil && want == nil) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
	check("put foo", s.IsPutPermitted(alice, []byte("foo")), nil)
	check("put /app/x", s.IsPutPermitted(alice, []byte("/app/x")), ErrPermissionDenied)
	check("get /app/ prefix", s.IsRangePermitted(alice, []byte("/app/"), []byte("/app0")), nil)
	check("get / prefix", s.IsRangePermitted(alice, []byte("/"), []byte("0")), ErrPermissionDenied)
	check("anonymous", s.IsRangePermitted(&AuthInfo{}, []byte("foo"), nil), ErrUserEmpty)
	check("unknown user", s.IsRangePermitted(&AuthInfo{Username: "bob", Revision: s.Revision()}, []byte("foo"), nil), ErrPermissionDenied)
	check("root anywhere", s.IsDeleteRangePermitted(&AuthInfo{Username: "root", Revision: s.Revision()}, []byte{0}, []byte{0}), nil)
	check("admin alice", s.IsAdminPermitted(alice), ErrPermissionDenied)
	// A txn is checked op by op, failure branch included.
	txn := &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("foo")}}}},
		Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("/app/x")}}}}}}}}}
	check("nested txn", s.CheckTxn(alice, nil, txn), ErrPermissionDenied)
	// A change of permissions makes the older identity stale.
	mustApply(t, s, "root", &pb.InternalRaftRequest{AuthRoleRevokePermission: &pb.AuthRoleRevokePermissionRequest{Role: "r1", Key: []byte("foo")}})
	check("old revision", s.IsPutPermitted(alice, []byte("foo")), ErrAuthOldRevision)
	alice.Revision = s.Revision()
	check("revoked", s.IsPutPermitted(alice, []byte("foo")), ErrPermissionDenied)
	if err := apply(t, s, "root", &pb.InternalRaftRequest{AuthRoleRevokePermission: &pb.AuthRoleRevokePermissionRequest{Role: "r1", Key: []byte("foo")}}); !errors.Is(err, ErrPermissionNotGranted) {
		t.Errorf("second revoke: %v", err)
	}
	// Self-service reads.
	if err := apply(t, s, "alice", &pb.InternalRaftRequest{AuthUserGet: &pb.AuthUserGetRequest{Name: "alice"}}); err != nil {
		t.Errorf("alice reads herself: %v", err)
	}
	if err := apply(t, s, "alice", &pb.InternalRaftRequest{AuthRoleGet: &pb.AuthRoleGetRequest{Role: "r1"}}); err != nil {
		t.Errorf("alice reads her role: %v", err)
	}
	if err := apply(t, s, "alice", &pb.InternalRaftRequest{AuthUserGet: &pb.AuthUserGetRequest{Name: "root"}}); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("alice reads root: %v", err)
	}
	// Passwords.
	if _, err := s.CheckPassword("alice", "apw"); err != nil {
		t.Errorf("right password: %v", err)
	}
	if _, err := s.CheckPassword("alice", "bad"); !errors.Is(err, ErrAuthFailed) {
		t.Errorf("wrong password: %v", err)
	}
	// Deleting the role takes it from alice (and her permissions).
	mustApply(t, s, "root", &pb.InternalRaftRequest{AuthRoleDelete: &pb.AuthRoleDeleteRequest{Role: "r1"}})
	alice.Revision = s.Revision()
	check("role deleted", s.IsRangePermitted(alice, []byte("/app/a"), nil), ErrPermissionDenied)
	if u := s.users["alice"]; len(u.Roles) != 0 {
		t.Errorf("alice still has roles %v", u.Roles)
	}
}

// TestRecoverMatchesApplied reloads the store from its db and compares.
func TestRecoverMatchesApplied(t *testing.T) {
	s, be := openTestStore(t)
	mustApply(t, s, "", &pb.InternalRaftRequest{AuthUserAdd: &pb.AuthUserAddRequest{Name: "root", HashedPassword: hashed(t, "r")}})
	mustApply(t, s, "", &pb.InternalRaftRequest{AuthUserGrantRole: &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}})
	mustApply(t, s, "", &pb.InternalRaftRequest{AuthRoleAdd: &pb.AuthRoleAddRequest{Name: "x"}})
	mustApply(t, s, "", &pb.InternalRaftRequest{AuthEnable: &pb.AuthEnableRequest{}})
	s2, err := Open(be, Options{BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	if s2.Revision() != s.Revision() || !s2.Enabled() || len(s2.users) != 1 || len(s2.roles) != 1 {
		t.Fatalf("reloaded: revision %d enabled %v users %d roles %d; applied: revision %d", s2.Revision(), s2.Enabled(), len(s2.users), len(s2.roles), s.Revision())
	}
	if !bytes.Equal(s2.users["root"].Password, s.users["root"].Password) {
		t.Fatal("password hash differs after reload")
	}
}

// TestDecodeErrorsNameTheKey: a damaged value is refused with its place.
func TestDecodeErrorsNameTheKey(t *testing.T) {
	if _, err := DecodeUser([]byte("u"), []byte{0x0a, 0x05, 'u'}); err == nil || !bytes.Contains([]byte(err.Error()), []byte(`authUsers key "u"`)) {
		t.Errorf("truncated user: %v", err)
	}
	if _, err := DecodeEnabled([]byte{2}); err == nil {
		t.Error("authEnabled 0x02 accepted")
	}
	if _, err := DecodeRevision([]byte{1, 2, 3}); err == nil {
		t.Error("3-byte revision accepted")
	}
}

func FuzzDecodeUserRole(f *testing.F) {
	f.Add([]byte("cn"), []byte{0x0a, 0x02, 'c', 'n', 0x22, 0x02, 0x08, 0x01})
	f.Add([]byte("r"), []byte{0x0a, 0x01, 'r', 0x12, 0x07, 0x08, 0x02, 0x12, 0x03, 'f', 'o', 'o'})
	f.Fuzz(func(t *testing.T, key, val []byte) {
		if u, err := DecodeUser(key, val); err == nil && string(u.Name) != string(key) {
			t.Fatalf("user %q accepted under key %q", u.Name, key)
		}
		if r, err := DecodeRole(key, val); err == nil {
			mergePerms(&authpb.User{Roles: []string{string(key)}}, map[string]*authpb.Role{string(key): r}).read.permitted(key, nil)
		}
	})
}
