package auth

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/etckit/etckit/mvcc"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/authpb"
	"golang.org/x/crypto/bcrypt"
)

// The names with etcd's special rules.
const (
	RootUser = "root"
	RootRole = "root"
)

// Options configure a Store.
type Options struct {
	// Tokens makes and resolves tokens (NewTokenProvider); nil: none
	// (Authenticate fails, every token is invalid).
	Tokens TokenProvider
	// BcryptCost is --bcrypt-cost; out of bcrypt's 4..31 it is 10, as
	// etcd (with a warning).
	BcryptCost int
	Logger     *slog.Logger
}

// Store is the auth state of a member: a copy in memory of the three
// auth buckets, kept in step with the db it writes to.
type Store struct {
	opts Options
	log  *slog.Logger
	tp   TokenProvider

	mu      sync.RWMutex
	be      *mvcc.Backend
	enabled bool
	users   map[string]*authpb.User
	roles   map[string]*authpb.Role
	perms   map[string]*userPerms // per user; rebuilt on every change that can move it
	rev     atomic.Uint64
}

// Open loads the auth state from be. A db whose auth revision is 0 (never
// written) gets revision 1, as etcd's NewAuthStore gives it.
func Open(be *mvcc.Backend, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BcryptCost < bcrypt.MinCost || opts.BcryptCost > bcrypt.MaxCost {
		if opts.BcryptCost != 0 {
			opts.Logger.Warn("use default bcrypt cost instead of the invalid given cost",
				"min-cost", bcrypt.MinCost, "max-cost", bcrypt.MaxCost, "default-cost", bcrypt.DefaultCost, "given-cost", opts.BcryptCost)
		}
		opts.BcryptCost = bcrypt.DefaultCost
	}
	if opts.Tokens == nil {
		opts.Tokens = noTokens{}
	}
	s := &Store{opts: opts, log: opts.Logger, tp: opts.Tokens}
	if err := s.Recover(be); err != nil {
		return nil, err
	}
	return s, nil
}

// Recover reloads the auth state from be (a member's db replaced by a
// received snapshot, or at Open).
func (s *Store) Recover(be *mvcc.Backend) error {
	st, err := load(be)
	if err != nil {
		return err
	}
	if st.Revision == 0 && !be.ReadOnly() {
		st.Revision = 1
		if err := be.Write(func(w *mvcc.WriteTx) error {
			w.EnsureBucket([]byte(BucketAuth))
			w.Put([]byte(BucketAuth), []byte(KeyAuthRevision), encodeRevision(1))
			return nil
		}); err != nil {
			return fmt.Errorf("auth: write the first revision: %w", err)
		}
	}
	s.mu.Lock()
	wasEnabled := s.enabled
	s.be, s.enabled, s.users, s.roles = be, st.Enabled, st.Users, st.Roles
	s.rev.Store(st.Revision)
	s.refreshPermsLocked()
	s.mu.Unlock()
	switch {
	case st.Enabled && !wasEnabled:
		s.tp.Enable()
	case !st.Enabled && wasEnabled:
		s.tp.Disable()
	}
	return nil
}

// State is the decoded content of the auth buckets.
type State struct {
	Enabled  bool
	Revision uint64
	Users    map[string]*authpb.User
	Roles    map[string]*authpb.Role
}

// load reads and decodes the auth buckets of the committed db.
func load(be *mvcc.Backend) (*State, error) {
	if !be.ReadOnly() {
		if err := be.ForceCommit(); err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
	}
	v := be.Snapshot()
	defer v.Release()
	return Load(v.Tx())
}

// Load decodes the auth buckets of a bbolt transaction (tools read a db
// this way); errors name the bucket and key that do not decode.
func Load(tx *bolt.Tx) (*State, error) {
	st := &State{Users: map[string]*authpb.User{}, Roles: map[string]*authpb.Role{}}
	var err error
	if b := tx.Bucket([]byte(BucketAuth)); b != nil {
		if st.Enabled, err = DecodeEnabled(b.Get([]byte(KeyAuthEnabled))); err != nil {
			return nil, err
		}
		if st.Revision, err = DecodeRevision(b.Get([]byte(KeyAuthRevision))); err != nil {
			return nil, err
		}
	}
	if b := tx.Bucket([]byte(BucketAuthUsers)); b != nil {
		if err := b.ForEach(func(k, v []byte) error {
			u, err := DecodeUser(k, v)
			if err == nil {
				st.Users[string(k)] = u
			}
			return err
		}); err != nil {
			return nil, err
		}
	}
	if b := tx.Bucket([]byte(BucketAuthRoles)); b != nil {
		if err := b.ForEach(func(k, v []byte) error {
			r, err := DecodeRole(k, v)
			if err == nil {
				st.Roles[string(k)] = r
			}
			return err
		}); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// Enabled reports whether auth is enabled.
func (s *Store) Enabled() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.enabled
}

// Revision is the auth revision.
func (s *Store) Revision() uint64 { return s.rev.Load() }

// BcryptCost is the cost passwords are hashed with.
func (s *Store) BcryptCost() int { return s.opts.BcryptCost }

// Tokens is the store's token provider.
func (s *Store) Tokens() TokenProvider { return s.tp }

// refreshPermsLocked rebuilds every user's flattened permissions.
func (s *Store) refreshPermsLocked() {
	s.perms = make(map[string]*userPerms, len(s.users))
	for name, u := range s.users {
		s.perms[name] = mergePerms(u, s.roles)
	}
}

func hasRootRole(u *authpb.User) bool {
	i := sort.SearchStrings(u.Roles, RootRole)
	return i < len(u.Roles) && u.Roles[i] == RootRole
}

// IsAdminPermitted is etcd's: anyone while auth is disabled; else a user
// that exists and has the root role. The revision is not checked.
func (s *Store) IsAdminPermitted(ai *AuthInfo) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.isAdminLocked(ai)
}

func (s *Store) isAdminLocked(ai *AuthInfo) error {
	if !s.enabled {
		return nil
	}
	if ai == nil || ai.Username == "" {
		return ErrUserEmpty
	}
	u := s.users[ai.Username]
	if u == nil {
		return ErrUserNotFound
	}
	if !hasRootRole(u) {
		return ErrPermissionDenied
	}
	return nil
}

// IsRangePermitted checks a read of [key, rangeEnd).
func (s *Store) IsRangePermitted(ai *AuthInfo, key, rangeEnd []byte) error {
	return s.isOpPermitted(ai, key, rangeEnd, false)
}

// IsPutPermitted checks a write of key.
func (s *Store) IsPutPermitted(ai *AuthInfo, key []byte) error {
	return s.isOpPermitted(ai, key, nil, true)
}

// IsDeleteRangePermitted checks a write of [key, rangeEnd).
func (s *Store) IsDeleteRangePermitted(ai *AuthInfo, key, rangeEnd []byte) error {
	return s.isOpPermitted(ai, key, rangeEnd, true)
}

// isOpPermitted is etcd's, in its order: auth disabled; no identity
// (revision 0); an identity older than the store; unknown user; root;
// the user's permissions.
func (s *Store) isOpPermitted(ai *AuthInfo, key, rangeEnd []byte, write bool) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.enabled {
		return nil
	}
	if ai == nil || ai.Revision == 0 {
		return ErrUserEmpty
	}
	if ai.Revision < s.rev.Load() {
		return ErrAuthOldRevision
	}
	u := s.users[ai.Username]
	if u == nil {
		return ErrPermissionDenied
	}
	if hasRootRole(u) {
		return nil
	}
	p := s.perms[ai.Username]
	if p == nil {
		return ErrPermissionDenied
	}
	set := p.read
	if write {
		set = p.write
	}
	if set.permitted(key, rangeEnd) {
		return nil
	}
	return ErrPermissionDenied
}

// HasRole reports whether user exists and has role.
func (s *Store) HasRole(user, role string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	u := s.users[user]
	return u != nil && slices.Contains(u.Roles, role)
}

// CheckPassword is the password check of Authenticate, made by the member
// that received it before it proposes: the auth revision it saw, or
// ErrAuthNotEnabled, ErrAuthFailed, ErrNoPasswordUser.
func (s *Store) CheckPassword(name, password string) (uint64, error) {
	s.mu.RLock()
	if !s.enabled {
		s.mu.RUnlock()
		return 0, ErrAuthNotEnabled
	}
	u := s.users[name]
	rev := s.rev.Load()
	s.mu.RUnlock()
	if u == nil {
		return 0, ErrAuthFailed
	}
	if u.Options != nil && u.Options.NoPassword {
		return 0, ErrNoPasswordUser
	}
	// bcrypt is slow on purpose: outside the lock.
	if bcrypt.CompareHashAndPassword(u.Password, []byte(password)) != nil {
		s.log.Info("invalid password", "user-name", name)
		return 0, ErrAuthFailed
	}
	return rev, nil
}

// AuthInfoFromToken resolves a token (with a "Bearer " prefix or not);
// ErrInvalidAuthToken when it does not resolve.
func (s *Store) AuthInfoFromToken(ctx context.Context, token string) (*AuthInfo, error) {
	ai, ok := s.tp.Info(ctx, token, s.rev.Load())
	if !ok {
		return nil, ErrInvalidAuthToken
	}
	return ai, nil
}

// HashPassword is what the member receiving UserAdd or
// UserChangePassword does before it proposes: bcrypt at the store's cost.
func (s *Store) HashPassword(password string) ([]byte, error) {
	return bcrypt.GenerateFromPassword([]byte(password), s.opts.BcryptCost)
}

// Close stops the token provider.
func (s *Store) Close() {
	s.mu.RLock()
	on := s.enabled
	s.mu.RUnlock()
	if on {
		s.tp.Disable()
	}
}

// noTokens stands in for a missing provider: no token is valid.
type noTokens struct{}

func (noTokens) Info(context.Context, string, uint64) (*AuthInfo, bool) { return nil, false }
func (noTokens) Assign(context.Context, string, uint64, string, uint64) (string, error) {
	return "", ErrAuthFailed
}
func (noTokens) GenPrefix() (string, error) { return "", nil }
func (noTokens) InvalidateUser(string)      {}
func (noTokens) Enable()                    {}
func (noTokens) Disable()                   {}
