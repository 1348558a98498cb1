package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/etckit/etckit/auth"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// newTokenProvider makes the provider of --auth-token.
func newTokenProvider(cfg Config, waitIndex func(context.Context, uint64) error) (auth.TokenProvider, error) {
	spec := cfg.AuthToken
	switch spec {
	case "":
		spec = "simple"
	case "-":
		spec = ""
	}
	tp, err := auth.NewTokenProvider(spec, auth.TokenOptions{
		TTL:       cfg.AuthTokenTTL,
		WaitIndex: waitIndex,
		Warn:      func(msg string, args ...any) { cfg.Logger.Warn(msg, args...) },
	})
	if err != nil {
		return nil, fmt.Errorf("server: failed to create token provider (--auth-token %q): %w", cfg.AuthToken, err)
	}
	return tp, nil
}

// rootCtxKey marks the context of a request the member makes itself
// (lease expiry): it runs as root, as etcd's AuthStore.WithRoot.
type rootCtxKey struct{}

func withRoot(ctx context.Context) context.Context { return context.WithValue(ctx, rootCtxKey{}, true) }

// authInfo is the identity of a request, as etcd's AuthInfoFromCtx: none
// while auth is disabled; else the "token" metadata (or "authorization",
// the gateway's, with or without "Bearer "), which must resolve; else,
// with --client-cert-auth, the common name of the verified client
// certificate. nil: no identity.
func (s *Server) authInfo(ctx context.Context) (*auth.AuthInfo, error) {
	a := s.eng.Auth()
	if ctx.Value(rootCtxKey{}) != nil {
		// As WithRoot: only while auth is enabled (the entry then carries
		// no identity at all, byte for byte as etcd's).
		if !a.Enabled() {
			return nil, nil
		}
		return &auth.AuthInfo{Username: auth.RootUser, Revision: a.Revision()}, nil
	}
	// ValueFromIncomingContext reads one key without copying the whole
	// metadata (this runs on every request).
	if a.Enabled() {
		ts := metadata.ValueFromIncomingContext(ctx, rpctypes.TokenFieldNameGRPC)
		if len(ts) == 0 {
			ts = metadata.ValueFromIncomingContext(ctx, rpctypes.TokenFieldNameSwagger)
		}
		if len(ts) > 0 {
			ai, err := a.AuthInfoFromToken(ctx, strings.TrimPrefix(ts[0], "Bearer "))
			if err != nil {
				s.log.Warn("invalid auth token")
				return nil, err
			}
			return ai, nil
		}
	}
	// With --client-cert-auth, the verified certificate's common name
	// (not for gateway requests, which carry the gateway's certificate).
	cn, ok := s.certCommonName(ctx)
	if !ok {
		return nil, nil
	}
	return &auth.AuthInfo{Username: cn, Revision: a.Revision()}, nil
}

// requireAuthInfo is etcd's: with auth enabled, a request must carry an
// identity (any user, not necessarily one that exists).
func (s *Server) requireAuthInfo(ctx context.Context) error {
	if !s.eng.Auth().Enabled() {
		return nil
	}
	ai, err := s.authInfo(ctx)
	if err != nil {
		return err
	}
	if ai == nil {
		return auth.ErrUserEmpty
	}
	return nil
}

// checkAdmin is etcd's AuthAdmin.isPermitted: the caller has the root role.
func (s *Server) checkAdmin(ctx context.Context) error {
	ai, err := s.authInfo(ctx)
	if err != nil {
		return err
	}
	return s.eng.Auth().IsAdminPermitted(ai)
}

// serialized is etcd's doSerialize: check the caller, compute the answer,
// and throw it away if the auth revision moved meanwhile.
func (s *Server) serialized(ctx context.Context, chk func(*auth.AuthInfo) error, get func() error) error {
	a := s.eng.Auth()
	ai, err := s.authInfo(ctx)
	if err != nil {
		return err
	}
	if ai == nil {
		ai = &auth.AuthInfo{}
	}
	if err := chk(ai); err != nil {
		return err
	}
	if err := get(); err != nil {
		return err
	}
	if ai.Revision != 0 && ai.Revision != a.Revision() {
		return auth.ErrAuthOldRevision
	}
	return nil
}

// checkLeaseKeys is etcd's check of a lease renewal (write) or of its
// keys' listing (read): an admin, or a permission on every attached key,
// with the auth revision unchanged throughout.
func (s *Server) checkLeaseKeys(ctx context.Context, ids []int64, write bool) error {
	a := s.eng.Auth()
	rev := a.Revision()
	if !a.Enabled() {
		return nil
	}
	ai, err := s.authInfo(ctx)
	if err != nil {
		return err
	}
	if ai == nil {
		return auth.ErrUserEmpty
	}
	if a.IsAdminPermitted(ai) == nil {
		return nil
	}
	lessor := s.eng.Store().Lessor()
	for _, id := range ids {
		keys, _ := lessor.Keys(id)
		for _, k := range keys {
			if write {
				err = a.IsPutPermitted(ai, []byte(k))
			} else {
				err = a.IsRangePermitted(ai, []byte(k), nil)
			}
			if err != nil {
				return err
			}
		}
	}
	if rev != a.Revision() {
		return auth.ErrAuthOldRevision
	}
	return nil
}

// authErrors maps the auth store's errors to etcd's gRPC errors
// (v3rpc/util.go); the others go out as Unknown with their text.
var authErrors = map[error]error{
	auth.ErrRootUserNotExist:     rpctypes.ErrGRPCRootUserNotExist,
	auth.ErrRootRoleNotExist:     rpctypes.ErrGRPCRootRoleNotExist,
	auth.ErrUserAlreadyExist:     rpctypes.ErrGRPCUserAlreadyExist,
	auth.ErrUserEmpty:            rpctypes.ErrGRPCUserEmpty,
	auth.ErrUserNotFound:         rpctypes.ErrGRPCUserNotFound,
	auth.ErrRoleAlreadyExist:     rpctypes.ErrGRPCRoleAlreadyExist,
	auth.ErrRoleNotFound:         rpctypes.ErrGRPCRoleNotFound,
	auth.ErrRoleEmpty:            rpctypes.ErrGRPCRoleEmpty,
	auth.ErrAuthFailed:           rpctypes.ErrGRPCAuthFailed,
	auth.ErrPermissionNotGiven:   rpctypes.ErrGRPCPermissionNotGiven,
	auth.ErrPermissionDenied:     rpctypes.ErrGRPCPermissionDenied,
	auth.ErrRoleNotGranted:       rpctypes.ErrGRPCRoleNotGranted,
	auth.ErrPermissionNotGranted: rpctypes.ErrGRPCPermissionNotGranted,
	auth.ErrAuthNotEnabled:       rpctypes.ErrGRPCAuthNotEnabled,
	auth.ErrInvalidAuthToken:     rpctypes.ErrGRPCInvalidAuthToken,
	auth.ErrInvalidAuthMgmt:      rpctypes.ErrGRPCInvalidAuthMgmt,
	auth.ErrAuthOldRevision:      rpctypes.ErrGRPCAuthOldRevision,
}

type authServer struct {
	pb.UnimplementedAuthServer
	s *Server
}

// do proposes an Auth request and returns its response with the header
// filled.
func authDo[T proto.Message](ctx context.Context, s *Server, r *pb.InternalRaftRequest) (T, error) {
	var zero T
	m, err := s.propose(ctx, r)
	if err != nil {
		return zero, toGRPCError(err)
	}
	resp := m.(T)
	if h, ok := any(resp).(interface{ GetHeader() *pb.ResponseHeader }); ok && h.GetHeader() != nil {
		s.fill(h.GetHeader())
	}
	return resp, nil
}

func (a *authServer) AuthEnable(ctx context.Context, r *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	return authDo[*pb.AuthEnableResponse](ctx, a.s, &pb.InternalRaftRequest{AuthEnable: r})
}

func (a *authServer) AuthDisable(ctx context.Context, r *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	return authDo[*pb.AuthDisableResponse](ctx, a.s, &pb.InternalRaftRequest{AuthDisable: r})
}

func (a *authServer) AuthStatus(ctx context.Context, r *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	return authDo[*pb.AuthStatusResponse](ctx, a.s, &pb.InternalRaftRequest{AuthStatus: r})
}

// Authenticate checks the password on this member (after a linearizable
// read, so a quorum is needed), then proposes only the user name and a
// token prefix: the password never reaches the log. If the auth revision
// moved while the entry was in flight, the check is made again.
func (a *authServer) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	s := a.s
	if err := s.linearizableReadNotify(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	store := s.eng.Auth()
	for {
		checked, err := store.CheckPassword(r.Name, r.Password)
		if err != nil {
			if !errors.Is(err, auth.ErrAuthNotEnabled) {
				s.log.Warn("invalid authentication was requested", "user", r.Name, "error", err)
			}
			return nil, toGRPCError(err)
		}
		prefix, err := store.Tokens().GenPrefix()
		if err != nil {
			return nil, toGRPCError(err)
		}
		resp, err := authDo[*pb.AuthenticateResponse](ctx, s, &pb.InternalRaftRequest{
			Authenticate: &pb.InternalAuthenticateRequest{Name: r.Name, SimpleToken: prefix}})
		if err != nil {
			return nil, err
		}
		if checked == store.Revision() {
			return resp, nil
		}
		s.log.Info("revision when password checked became stale; retrying")
	}
}

// hashPassword is what the receiving member does with a new password
// before proposing: bcrypt at --bcrypt-cost, base64 in hashedPassword,
// the password itself cleared (every member stores the same hash).
func (s *Server) hashPassword(password string) (string, error) {
	h, err := s.eng.Auth().HashPassword(password)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(h), nil
}

func (a *authServer) UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	r = proto.Clone(r).(*pb.AuthUserAddRequest)
	if r.Options == nil || !r.Options.NoPassword {
		h, err := a.s.hashPassword(r.Password)
		if err != nil {
			return nil, toGRPCError(err)
		}
		r.HashedPassword, r.Password = h, ""
	}
	return authDo[*pb.AuthUserAddResponse](ctx, a.s, &pb.InternalRaftRequest{AuthUserAdd: r})
}

func (a *authServer) UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	return authDo[*pb.AuthUserDeleteResponse](ctx, a.s, &pb.InternalRaftRequest{AuthUserDelete: r})
}

func (a *authServer) UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	r = proto.Clone(r).(*pb.AuthUserChangePasswordRequest)
	if r.Password != "" {
		h, err := a.s.hashPassword(r.Password)
		if err != nil {
			return nil, toGRPCError(err)
		}
		r.HashedPassword, r.Password = h, ""
	}
	return authDo[*pb.AuthUserChangePasswordResponse](ctx, a.s, &pb.InternalRaftRequest{AuthUserChangePassword: r})
}

func (a *authServer) UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	return authDo[*pb.AuthUserGrantRoleResponse](ctx, a.s, &pb.InternalRaftRequest{AuthUserGrantRole: r})
}

func (a *authServer) UserGet(ctx context.Context, r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	return authDo[*pb.AuthUserGetResponse](ctx, a.s, &pb.InternalRaftRequest{AuthUserGet: r})
}

func (a *authServer) UserList(ctx context.Context, r *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	return authDo[*pb.AuthUserListResponse](ctx, a.s, &pb.InternalRaftRequest{AuthUserList: r})
}

func (a *authServer) UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	return authDo[*pb.AuthUserRevokeRoleResponse](ctx, a.s, &pb.InternalRaftRequest{AuthUserRevokeRole: r})
}

func (a *authServer) RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	return authDo[*pb.AuthRoleAddResponse](ctx, a.s, &pb.InternalRaftRequest{AuthRoleAdd: r})
}

func (a *authServer) RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	return authDo[*pb.AuthRoleGrantPermissionResponse](ctx, a.s, &pb.InternalRaftRequest{AuthRoleGrantPermission: r})
}

func (a *authServer) RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	return authDo[*pb.AuthRoleGetResponse](ctx, a.s, &pb.InternalRaftRequest{AuthRoleGet: r})
}

func (a *authServer) RoleList(ctx context.Context, r *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	return authDo[*pb.AuthRoleListResponse](ctx, a.s, &pb.InternalRaftRequest{AuthRoleList: r})
}

func (a *authServer) RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	return authDo[*pb.AuthRoleRevokePermissionResponse](ctx, a.s, &pb.InternalRaftRequest{AuthRoleRevokePermission: r})
}

func (a *authServer) RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	return authDo[*pb.AuthRoleDeleteResponse](ctx, a.s, &pb.InternalRaftRequest{AuthRoleDelete: r})
}

// watchPermitted is etcd's isWatchPermitted.
func (s *Server) watchPermitted(ctx context.Context, key, rangeEnd []byte) error {
	ai, err := s.authInfo(ctx)
	if err != nil {
		return err
	}
	if ai == nil {
		ai = &auth.AuthInfo{}
	}
	return s.eng.Auth().IsRangePermitted(ai, key, rangeEnd)
}

// watchDenial is the cancel reason of a refused watch: the gRPC status
// text of etcd's error.
func watchDenial(err error) string {
	switch {
	case errors.Is(err, auth.ErrInvalidAuthToken):
		return rpctypes.ErrGRPCInvalidAuthToken.Error()
	case errors.Is(err, auth.ErrAuthOldRevision):
		return rpctypes.ErrGRPCAuthOldRevision.Error()
	case errors.Is(err, auth.ErrUserEmpty):
		return rpctypes.ErrGRPCUserEmpty.Error()
	}
	return rpctypes.ErrGRPCPermissionDenied.Error()
}
