package auth

import (
	"encoding/binary"
	"fmt"

	"go.etcd.io/etcd/api/v3/authpb"
	"google.golang.org/protobuf/proto"
)

// The buckets and keys of the auth state (see the package comment).
const (
	BucketAuth      = "auth"
	BucketAuthUsers = "authUsers"
	BucketAuthRoles = "authRoles"

	KeyAuthEnabled  = "authEnabled"
	KeyAuthRevision = "authRevision"
)

// DecodeUser decodes a value of the authUsers bucket stored under key.
func DecodeUser(key, val []byte) (*authpb.User, error) {
	u := new(authpb.User)
	if err := proto.Unmarshal(val, u); err != nil {
		return nil, fmt.Errorf("auth: bucket %s key %q: not an authpb.User: %w", BucketAuthUsers, key, err)
	}
	if string(u.Name) != string(key) {
		return nil, fmt.Errorf("auth: bucket %s key %q: holds user %q", BucketAuthUsers, key, u.Name)
	}
	return u, nil
}

// DecodeRole decodes a value of the authRoles bucket stored under key.
func DecodeRole(key, val []byte) (*authpb.Role, error) {
	r := new(authpb.Role)
	if err := proto.Unmarshal(val, r); err != nil {
		return nil, fmt.Errorf("auth: bucket %s key %q: not an authpb.Role: %w", BucketAuthRoles, key, err)
	}
	if string(r.Name) != string(key) {
		return nil, fmt.Errorf("auth: bucket %s key %q: holds role %q", BucketAuthRoles, key, r.Name)
	}
	for i, p := range r.KeyPermission {
		if _, ok := authpb.Permission_Type_name[int32(p.PermType)]; !ok {
			return nil, fmt.Errorf("auth: bucket %s key %q: permission %d has unknown type %d", BucketAuthRoles, key, i, p.PermType)
		}
	}
	return r, nil
}

// DecodeEnabled decodes auth/authEnabled (absent: nil, disabled).
func DecodeEnabled(val []byte) (bool, error) {
	switch {
	case val == nil:
		return false, nil
	case len(val) == 1 && val[0] <= 1:
		return val[0] == 1, nil
	}
	return false, fmt.Errorf("auth: bucket %s key %s: want one byte 0x00 or 0x01, have % x", BucketAuth, KeyAuthEnabled, val)
}

// DecodeRevision decodes auth/authRevision (absent: nil, 0).
func DecodeRevision(val []byte) (uint64, error) {
	switch len(val) {
	case 0:
		if val == nil {
			return 0, nil
		}
	case 8:
		return binary.BigEndian.Uint64(val), nil
	}
	return 0, fmt.Errorf("auth: bucket %s key %s: want 8 bytes, have %d", BucketAuth, KeyAuthRevision, len(val))
}

func encodeEnabled(on bool) []byte {
	if on {
		return []byte{1}
	}
	return []byte{0}
}

func encodeRevision(rev uint64) []byte { return binary.BigEndian.AppendUint64(nil, rev) }

// marshal is proto's deterministic encoding; etcd's (gogoproto in 3.5/3.6,
// google.golang.org/protobuf in 3.7) produce the same bytes for these
// messages.
func marshal(m proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		// Cannot happen: authpb.User and authpb.Role are generated
		// messages with only bytes, strings, enums and a nested message,
		// which proto always encodes; a failure is a broken build.
		panic(fmt.Sprintf("auth: marshal %T: %v", m, err))
	}
	return b
}
