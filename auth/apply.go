package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"sort"

	"github.com/etckit/etckit/mvcc"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/proto"
)

// IsAuthRequest reports whether r is one of the Auth service's requests
// (Apply handles those).
func IsAuthRequest(r *pb.InternalRaftRequest) bool {
	return r.AuthEnable != nil || r.AuthDisable != nil || r.AuthStatus != nil || r.Authenticate != nil ||
		r.AuthUserAdd != nil || r.AuthUserDelete != nil || r.AuthUserChangePassword != nil ||
		r.AuthUserGrantRole != nil || r.AuthUserRevokeRole != nil || r.AuthUserGet != nil ||
		r.AuthUserList != nil || r.AuthRoleAdd != nil || r.AuthRoleDelete != nil || r.AuthRoleGet != nil ||
		r.AuthRoleList != nil || r.AuthRoleGrantPermission != nil || r.AuthRoleRevokePermission != nil
}

// needsAdmin lists the requests etcd applies only for an admin.
func needsAdmin(r *pb.InternalRaftRequest) bool {
	return r.AuthEnable != nil || r.AuthDisable != nil || r.AuthUserAdd != nil || r.AuthUserDelete != nil ||
		r.AuthUserChangePassword != nil || r.AuthUserGrantRole != nil || r.AuthUserRevokeRole != nil ||
		r.AuthRoleAdd != nil || r.AuthRoleGrantPermission != nil || r.AuthRoleRevokePermission != nil ||
		r.AuthRoleDelete != nil || r.AuthUserList != nil || r.AuthRoleList != nil
}

// HeaderInfo is the identity a raft request carries in its header.
func HeaderInfo(r *pb.InternalRaftRequest) *AuthInfo {
	h := r.GetHeader()
	return &AuthInfo{Username: h.GetUsername(), Revision: h.GetAuthRevision()}
}

// Apply applies an Auth request of a committed entry (IsAuthRequest), as
// every member does: the admin check on the header's identity, then the
// change, written to the db in the caller's write batch. index is the
// member's consistent index (simple tokens carry it); kvRev is the KV
// revision the response header reports. reqErr is the request's answer;
// fatal a storage failure.
func (s *Store) Apply(r *pb.InternalRaftRequest, index uint64, kvRev int64) (resp proto.Message, reqErr, fatal error) {
	ai := HeaderInfo(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	if needsAdmin(r) {
		if err := s.isAdminLocked(ai); err != nil {
			return nil, err, nil
		}
	}
	hdr := &pb.ResponseHeader{Revision: kvRev}
	switch {
	case r.AuthEnable != nil:
		return s.enableLocked(hdr)
	case r.AuthDisable != nil:
		return s.disableLocked(hdr)
	case r.AuthStatus != nil:
		return &pb.AuthStatusResponse{Header: hdr, Enabled: s.enabled, AuthRevision: s.rev.Load()}, nil, nil
	case r.Authenticate != nil:
		return s.authenticateLocked(hdr, r.Authenticate, index)
	case r.AuthUserAdd != nil:
		return s.userAddLocked(hdr, r.AuthUserAdd)
	case r.AuthUserDelete != nil:
		return s.userDeleteLocked(hdr, r.AuthUserDelete)
	case r.AuthUserChangePassword != nil:
		return s.userChangePasswordLocked(hdr, r.AuthUserChangePassword)
	case r.AuthUserGrantRole != nil:
		return s.userGrantRoleLocked(hdr, r.AuthUserGrantRole)
	case r.AuthUserRevokeRole != nil:
		return s.userRevokeRoleLocked(hdr, r.AuthUserRevokeRole)
	case r.AuthUserGet != nil:
		// The caller may read itself.
		if err := s.isAdminLocked(ai); err != nil && r.AuthUserGet.Name != ai.Username {
			return nil, err, nil
		}
		u := s.users[r.AuthUserGet.Name]
		if u == nil {
			return nil, ErrUserNotFound, nil
		}
		return &pb.AuthUserGetResponse{Header: hdr, Roles: slices.Clone(u.Roles)}, nil, nil
	case r.AuthUserList != nil:
		resp := &pb.AuthUserListResponse{Header: hdr, Users: []string{}}
		for _, k := range sortedKeys(s.users) {
			resp.Users = append(resp.Users, string(s.users[k].Name))
		}
		return resp, nil, nil
	case r.AuthRoleAdd != nil:
		return s.roleAddLocked(hdr, r.AuthRoleAdd)
	case r.AuthRoleDelete != nil:
		return s.roleDeleteLocked(hdr, r.AuthRoleDelete)
	case r.AuthRoleGet != nil:
		// A member of the role may read it.
		if err := s.isAdminLocked(ai); err != nil {
			if u := s.users[ai.Username]; u == nil || !slices.Contains(u.Roles, r.AuthRoleGet.Role) {
				return nil, err, nil
			}
		}
		role := s.roles[r.AuthRoleGet.Role]
		if role == nil {
			return nil, ErrRoleNotFound, nil
		}
		resp := &pb.AuthRoleGetResponse{Header: hdr}
		if string(role.Name) == RootRole {
			// root may do everything, whatever is stored for it.
			resp.Perm = []*authpb.Permission{{PermType: authpb.Permission_READWRITE, Key: []byte{}, RangeEnd: []byte{0}}}
		} else {
			for _, p := range role.KeyPermission {
				resp.Perm = append(resp.Perm, proto.Clone(p).(*authpb.Permission))
			}
		}
		return resp, nil, nil
	case r.AuthRoleList != nil:
		// etcd lists the roles in [0x00, 0xff): a name starting with
		// 0xff is not listed.
		resp := &pb.AuthRoleListResponse{Header: hdr, Roles: []string{}}
		for _, k := range sortedKeys(s.roles) {
			if k >= "\xff" {
				continue
			}
			resp.Roles = append(resp.Roles, string(s.roles[k].Name))
		}
		return resp, nil, nil
	case r.AuthRoleGrantPermission != nil:
		return s.roleGrantPermissionLocked(hdr, r.AuthRoleGrantPermission)
	case r.AuthRoleRevokePermission != nil:
		return s.roleRevokePermissionLocked(hdr, r.AuthRoleRevokePermission)
	}
	return nil, fmt.Errorf("auth: not an auth request"), nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// write puts the changes of one request into the db's write batch, with
// the next auth revision when bump is set.
func (s *Store) writeLocked(bump bool, fn func(w *mvcc.WriteTx)) error {
	rev := s.rev.Load()
	if bump {
		rev++
	}
	err := s.be.Write(func(w *mvcc.WriteTx) error {
		fn(w)
		if bump {
			w.Put([]byte(BucketAuth), []byte(KeyAuthRevision), encodeRevision(rev))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("auth: write: %w", err)
	}
	s.rev.Store(rev)
	return nil
}

func putUser(w *mvcc.WriteTx, u *authpb.User) { w.Put([]byte(BucketAuthUsers), u.Name, marshal(u)) }

// saveUserLocked stores u (new or changed) with the next auth revision and
// rebuilds the permissions, in memory as in the db.
func (s *Store) saveUserLocked(u *authpb.User) error {
	if err := s.writeLocked(true, func(w *mvcc.WriteTx) { putUser(w, u) }); err != nil {
		return err
	}
	s.users[string(u.Name)] = u
	s.refreshPermsLocked()
	return nil
}
func putRole(w *mvcc.WriteTx, r *authpb.Role) { w.Put([]byte(BucketAuthRoles), r.Name, marshal(r)) }

func (s *Store) enableLocked(hdr *pb.ResponseHeader) (proto.Message, error, error) {
	resp := &pb.AuthEnableResponse{Header: hdr}
	if s.enabled {
		return resp, nil, nil
	}
	u := s.users[RootUser]
	if u == nil {
		return nil, ErrRootUserNotExist, nil
	}
	if !hasRootRole(u) {
		return nil, ErrRootRoleNotExist, nil
	}
	if err := s.writeLocked(false, func(w *mvcc.WriteTx) {
		w.Put([]byte(BucketAuth), []byte(KeyAuthEnabled), encodeEnabled(true))
	}); err != nil {
		return nil, nil, err
	}
	s.enabled = true
	s.tp.Enable()
	s.refreshPermsLocked()
	s.log.Info("enabled authentication")
	return resp, nil, nil
}

func (s *Store) disableLocked(hdr *pb.ResponseHeader) (proto.Message, error, error) {
	resp := &pb.AuthDisableResponse{Header: hdr}
	if !s.enabled {
		return resp, nil, nil
	}
	if err := s.writeLocked(true, func(w *mvcc.WriteTx) {
		w.Put([]byte(BucketAuth), []byte(KeyAuthEnabled), encodeEnabled(false))
	}); err != nil {
		return nil, nil, err
	}
	s.enabled = false
	s.tp.Disable()
	s.log.Info("disabled authentication")
	return resp, nil, nil
}

func (s *Store) authenticateLocked(hdr *pb.ResponseHeader, r *pb.InternalAuthenticateRequest, index uint64) (proto.Message, error, error) {
	if !s.enabled {
		return nil, ErrAuthNotEnabled, nil
	}
	u := s.users[r.Name]
	if u == nil || (u.Options != nil && u.Options.NoPassword) {
		return nil, ErrAuthFailed, nil
	}
	token, err := s.tp.Assign(context.Background(), r.Name, s.rev.Load(), r.SimpleToken, index)
	if err != nil {
		return nil, err, nil
	}
	return &pb.AuthenticateResponse{Header: hdr, Token: token}, nil, nil
}

// selectPassword is the stored hash of a UserAdd or UserChangePassword
// entry: the hash its proposer made (base64), or, for an entry from
// before etcd 3.5 that carries the password itself, a hash made now.
func (s *Store) selectPassword(password, hashed string) ([]byte, error) {
	if password != "" && hashed == "" {
		return bcrypt.GenerateFromPassword([]byte(password), s.opts.BcryptCost)
	}
	return base64.StdEncoding.DecodeString(hashed)
}

func (s *Store) userAddLocked(hdr *pb.ResponseHeader, r *pb.AuthUserAddRequest) (proto.Message, error, error) {
	if r.Name == "" {
		return nil, ErrUserEmpty, nil
	}
	if s.users[r.Name] != nil {
		return nil, ErrUserAlreadyExist, nil
	}
	opts := r.Options
	if opts == nil {
		opts = &authpb.UserAddOptions{}
	}
	u := &authpb.User{Name: []byte(r.Name), Options: proto.Clone(opts).(*authpb.UserAddOptions)}
	if !opts.NoPassword {
		pw, err := s.selectPassword(r.Password, r.HashedPassword)
		if err != nil {
			return nil, ErrNoPasswordUser, nil
		}
		u.Password = pw
	}
	if err := s.saveUserLocked(u); err != nil {
		return nil, nil, err
	}
	s.log.Info("added a user", "user-name", r.Name)
	return &pb.AuthUserAddResponse{Header: hdr}, nil, nil
}

func (s *Store) userDeleteLocked(hdr *pb.ResponseHeader, r *pb.AuthUserDeleteRequest) (proto.Message, error, error) {
	if s.enabled && r.Name == RootUser {
		return nil, ErrInvalidAuthMgmt, nil
	}
	if s.users[r.Name] == nil {
		return nil, ErrUserNotFound, nil
	}
	if err := s.writeLocked(true, func(w *mvcc.WriteTx) { w.Delete([]byte(BucketAuthUsers), []byte(r.Name)) }); err != nil {
		return nil, nil, err
	}
	delete(s.users, r.Name)
	s.refreshPermsLocked()
	s.tp.InvalidateUser(r.Name)
	s.log.Info("deleted a user", "user-name", r.Name)
	return &pb.AuthUserDeleteResponse{Header: hdr}, nil, nil
}

func (s *Store) userChangePasswordLocked(hdr *pb.ResponseHeader, r *pb.AuthUserChangePasswordRequest) (proto.Message, error, error) {
	old := s.users[r.Name]
	if old == nil {
		return nil, ErrUserNotFound, nil
	}
	u := &authpb.User{Name: []byte(r.Name), Roles: old.Roles, Options: old.Options}
	// A no-password user keeps none; a user from before etcd 3.4 (no
	// options) has a password.
	if old.Options == nil || !old.Options.NoPassword {
		pw, err := s.selectPassword(r.Password, r.HashedPassword)
		if err != nil {
			return nil, ErrNoPasswordUser, nil
		}
		u.Password = pw
	}
	if err := s.saveUserLocked(u); err != nil {
		return nil, nil, err
	}
	s.tp.InvalidateUser(r.Name)
	s.log.Info("changed a password of a user", "user-name", r.Name)
	return &pb.AuthUserChangePasswordResponse{Header: hdr}, nil, nil
}

func (s *Store) userGrantRoleLocked(hdr *pb.ResponseHeader, r *pb.AuthUserGrantRoleRequest) (proto.Message, error, error) {
	old := s.users[r.User]
	if old == nil {
		return nil, ErrUserNotFound, nil
	}
	// root needs no role of that name in authRoles.
	if r.Role != RootRole && s.roles[r.Role] == nil {
		return nil, ErrRoleNotFound, nil
	}
	resp := &pb.AuthUserGrantRoleResponse{Header: hdr}
	i := sort.SearchStrings(old.Roles, r.Role)
	if i < len(old.Roles) && old.Roles[i] == r.Role {
		return resp, nil, nil // already granted: no new revision
	}
	u := proto.Clone(old).(*authpb.User)
	u.Roles = append(u.Roles, r.Role)
	sort.Strings(u.Roles)
	if err := s.saveUserLocked(u); err != nil {
		return nil, nil, err
	}
	s.log.Info("granted a role to a user", "user-name", r.User, "added-role-name", r.Role)
	return resp, nil, nil
}

func (s *Store) userRevokeRoleLocked(hdr *pb.ResponseHeader, r *pb.AuthUserRevokeRoleRequest) (proto.Message, error, error) {
	if s.enabled && r.Name == RootUser && r.Role == RootRole {
		return nil, ErrInvalidAuthMgmt, nil
	}
	old := s.users[r.Name]
	if old == nil {
		return nil, ErrUserNotFound, nil
	}
	u := &authpb.User{Name: old.Name, Password: old.Password, Options: old.Options}
	for _, role := range old.Roles {
		if role != r.Role {
			u.Roles = append(u.Roles, role)
		}
	}
	if len(u.Roles) == len(old.Roles) {
		return nil, ErrRoleNotGranted, nil
	}
	if err := s.saveUserLocked(u); err != nil {
		return nil, nil, err
	}
	s.log.Info("revoked a role from a user", "user-name", r.Name, "revoked-role-name", r.Role)
	return &pb.AuthUserRevokeRoleResponse{Header: hdr}, nil, nil
}

func (s *Store) roleAddLocked(hdr *pb.ResponseHeader, r *pb.AuthRoleAddRequest) (proto.Message, error, error) {
	if r.Name == "" {
		return nil, ErrRoleEmpty, nil
	}
	if s.roles[r.Name] != nil {
		return nil, ErrRoleAlreadyExist, nil
	}
	role := &authpb.Role{Name: []byte(r.Name)}
	if err := s.writeLocked(true, func(w *mvcc.WriteTx) { putRole(w, role) }); err != nil {
		return nil, nil, err
	}
	s.roles[r.Name] = role
	// etcd does not rebuild the permissions here: no user can hold a
	// role that did not exist (but root, which needs none).
	s.log.Info("created a role", "role-name", r.Name)
	return &pb.AuthRoleAddResponse{Header: hdr}, nil, nil
}

func (s *Store) roleDeleteLocked(hdr *pb.ResponseHeader, r *pb.AuthRoleDeleteRequest) (proto.Message, error, error) {
	if s.enabled && r.Role == RootRole {
		return nil, ErrInvalidAuthMgmt, nil
	}
	if s.roles[r.Role] == nil {
		return nil, ErrRoleNotFound, nil
	}
	changed := map[string]*authpb.User{}
	for name, old := range s.users {
		if !slices.Contains(old.Roles, r.Role) {
			continue
		}
		u := &authpb.User{Name: old.Name, Password: old.Password, Options: old.Options}
		for _, role := range old.Roles {
			if role != r.Role {
				u.Roles = append(u.Roles, role)
			}
		}
		changed[name] = u
	}
	if err := s.writeLocked(true, func(w *mvcc.WriteTx) {
		w.Delete([]byte(BucketAuthRoles), []byte(r.Role))
		for _, u := range changed {
			putUser(w, u)
		}
	}); err != nil {
		return nil, nil, err
	}
	delete(s.roles, r.Role)
	for name, u := range changed {
		s.users[name] = u
	}
	s.refreshPermsLocked()
	s.log.Info("deleted a role", "role-name", r.Role)
	return &pb.AuthRoleDeleteResponse{Header: hdr}, nil, nil
}

// permsByKey is etcd's permSlice: sorted by key alone, with sort.Sort
// (not stable), so equal keys end up in the order etcd's sort leaves them.
type permsByKey []*authpb.Permission

func (p permsByKey) Len() int           { return len(p) }
func (p permsByKey) Less(i, j int) bool { return bytes.Compare(p[i].Key, p[j].Key) < 0 }
func (p permsByKey) Swap(i, j int)      { p[i], p[j] = p[j], p[i] }

func (s *Store) roleGrantPermissionLocked(hdr *pb.ResponseHeader, r *pb.AuthRoleGrantPermissionRequest) (proto.Message, error, error) {
	if r.Perm == nil {
		return nil, ErrPermissionNotGiven, nil
	}
	if !validPermissionRange(r.Perm.Key, r.Perm.RangeEnd) {
		return nil, ErrInvalidAuthMgmt, nil
	}
	old := s.roles[r.Name]
	if old == nil {
		return nil, ErrRoleNotFound, nil
	}
	role := proto.Clone(old).(*authpb.Role)
	i := sort.Search(len(role.KeyPermission), func(i int) bool {
		return bytes.Compare(role.KeyPermission[i].Key, r.Perm.Key) >= 0
	})
	if i < len(role.KeyPermission) && bytes.Equal(role.KeyPermission[i].Key, r.Perm.Key) &&
		bytes.Equal(role.KeyPermission[i].RangeEnd, r.Perm.RangeEnd) {
		role.KeyPermission[i].PermType = r.Perm.PermType
	} else {
		role.KeyPermission = append(role.KeyPermission, &authpb.Permission{
			Key: r.Perm.Key, RangeEnd: r.Perm.RangeEnd, PermType: r.Perm.PermType})
		sort.Sort(permsByKey(role.KeyPermission))
	}
	if err := s.writeLocked(true, func(w *mvcc.WriteTx) { putRole(w, role) }); err != nil {
		return nil, nil, err
	}
	s.roles[r.Name] = role
	s.refreshPermsLocked()
	s.log.Info("granted/updated a permission to a role", "role-name", r.Name,
		"permission-name", authpb.Permission_Type_name[int32(r.Perm.PermType)])
	return &pb.AuthRoleGrantPermissionResponse{Header: hdr}, nil, nil
}

func (s *Store) roleRevokePermissionLocked(hdr *pb.ResponseHeader, r *pb.AuthRoleRevokePermissionRequest) (proto.Message, error, error) {
	old := s.roles[r.Role]
	if old == nil {
		return nil, ErrRoleNotFound, nil
	}
	role := &authpb.Role{Name: old.Name}
	for _, p := range old.KeyPermission {
		if !bytes.Equal(p.Key, r.Key) || !bytes.Equal(p.RangeEnd, r.RangeEnd) {
			role.KeyPermission = append(role.KeyPermission, p)
		}
	}
	if len(role.KeyPermission) == len(old.KeyPermission) {
		return nil, ErrPermissionNotGranted, nil
	}
	if err := s.writeLocked(true, func(w *mvcc.WriteTx) { putRole(w, role) }); err != nil {
		return nil, nil, err
	}
	s.roles[r.Role] = role
	s.refreshPermsLocked()
	s.log.Info("revoked a permission on range", "role-name", r.Role)
	return &pb.AuthRoleRevokePermissionResponse{Header: hdr}, nil, nil
}

// LeaseKeys returns the keys attached to a lease; ok false if there is no
// such lease.
type LeaseKeys func(id int64) (keys []string, ok bool)

// CheckRequest is the permission check a member makes when it applies a
// KV or lease request of a raft entry, on the header's identity (etcd's
// authApplierV3): Put, Range, DeleteRange, Txn and LeaseRevoke. Other
// requests pass.
func (s *Store) CheckRequest(r *pb.InternalRaftRequest, leaseKeys LeaseKeys) error {
	if !s.Enabled() {
		return nil
	}
	ai := HeaderInfo(r)
	switch {
	case r.Put != nil:
		return s.checkPut(ai, leaseKeys, r.Put)
	case r.Range != nil:
		return s.IsRangePermitted(ai, r.Range.Key, r.Range.RangeEnd)
	case r.DeleteRange != nil:
		if err := s.IsDeleteRangePermitted(ai, r.DeleteRange.Key, r.DeleteRange.RangeEnd); err != nil {
			return err
		}
		if r.DeleteRange.PrevKv {
			return s.IsRangePermitted(ai, r.DeleteRange.Key, r.DeleteRange.RangeEnd)
		}
	case r.Txn != nil:
		return s.CheckTxn(ai, leaseKeys, r.Txn)
	case r.LeaseRevoke != nil:
		return s.checkLeasePuts(ai, leaseKeys, r.LeaseRevoke.ID)
	}
	return nil
}

func (s *Store) checkPut(ai *AuthInfo, leaseKeys LeaseKeys, r *pb.PutRequest) error {
	if err := s.IsPutPermitted(ai, r.Key); err != nil {
		return err
	}
	if err := s.checkLeasePuts(ai, leaseKeys, r.Lease); err != nil {
		return err
	}
	if r.PrevKv {
		return s.IsRangePermitted(ai, r.Key, nil)
	}
	return nil
}

// checkLeasePuts: touching a lease (attaching a key, revoking it) needs an
// admin or write permission on every key attached to it.
func (s *Store) checkLeasePuts(ai *AuthInfo, leaseKeys LeaseKeys, id int64) error {
	if id == 0 || leaseKeys == nil {
		return nil
	}
	keys, ok := leaseKeys(id)
	if !ok {
		return nil
	}
	if s.IsAdminPermitted(ai) == nil {
		return nil
	}
	for _, k := range keys {
		if err := s.IsPutPermitted(ai, []byte(k)); err != nil {
			return err
		}
	}
	return nil
}

// CheckTxn is etcd's txn permission check: every compare is a read; then
// every op of success and of failure, whatever the outcome, nested txns
// included.
func (s *Store) CheckTxn(ai *AuthInfo, leaseKeys LeaseKeys, t *pb.TxnRequest) error {
	for _, c := range t.Compare {
		if err := s.IsRangePermitted(ai, c.Key, c.RangeEnd); err != nil {
			return err
		}
	}
	for _, ops := range [][]*pb.RequestOp{t.Success, t.Failure} {
		for _, op := range ops {
			var err error
			switch {
			case op.GetRequestRange() != nil:
				rr := op.GetRequestRange()
				err = s.IsRangePermitted(ai, rr.Key, rr.RangeEnd)
			case op.GetRequestPut() != nil:
				err = s.checkPut(ai, leaseKeys, op.GetRequestPut())
			case op.GetRequestDeleteRange() != nil:
				dr := op.GetRequestDeleteRange()
				if dr.PrevKv {
					if err = s.IsRangePermitted(ai, dr.Key, dr.RangeEnd); err != nil {
						return err
					}
				}
				err = s.IsDeleteRangePermitted(ai, dr.Key, dr.RangeEnd)
			case op.GetRequestTxn() != nil:
				err = s.CheckTxn(ai, leaseKeys, op.GetRequestTxn())
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}
