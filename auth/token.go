package auth

import (
	"context"
	"time"
)

// AuthInfo is the identity a request carries: the user a token or a
// client certificate names, and the auth revision the identity was
// resolved at (a simple token and a certificate: the store's revision then;
// a JWT: its "revision" claim).
type AuthInfo struct {
	Username string
	Revision uint64
}

// TokenProvider makes and resolves the tokens Authenticate hands out
// (etcd --auth-token: "simple" or "jwt,...").
type TokenProvider interface {
	// Info resolves token; ok is false when it is not valid (unknown,
	// expired, badly signed). revision is the auth store's revision now,
	// which a simple token resolves to.
	Info(ctx context.Context, token string, revision uint64) (ai *AuthInfo, ok bool)
	// Assign makes the token of an applied Authenticate: prefix is what
	// GenPrefix gave the proposing member (simple tokens), index the
	// applying member's consistent index, revision the auth revision.
	Assign(ctx context.Context, username string, revision uint64, prefix string, index uint64) (string, error)
	// GenPrefix is the random part of a simple token, chosen by the
	// member that proposes an Authenticate ("" for JWT).
	GenPrefix() (string, error)
	// InvalidateUser drops username's tokens (UserDelete, password change).
	InvalidateUser(username string)
	// Enable and Disable follow AuthEnable and AuthDisable (Disable drops
	// every simple token).
	Enable()
	Disable()
}

// TokenOptions are what a token provider needs from its member.
type TokenOptions struct {
	// TTL is --auth-token-ttl for simple tokens (0: 300 s).
	TTL time.Duration
	// WaitIndex waits until the member has applied index (simple tokens
	// name the index they were made at); nil: do not wait.
	WaitIndex func(ctx context.Context, index uint64) error
	// Warn logs a warning (nil: discarded).
	Warn func(msg string, args ...any)
}
