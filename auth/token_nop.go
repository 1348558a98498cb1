package auth

import "context"

// nopTokenProvider is the provider of --auth-token "" (etcd's tokenNop):
// no token can be made or resolved, so Authenticate fails with
// ErrAuthFailed and every token is invalid.
type nopTokenProvider struct{}

// Info reports every token invalid.
func (nopTokenProvider) Info(context.Context, string, uint64) (*AuthInfo, bool) { return nil, false }

// Assign fails with ErrAuthFailed.
func (nopTokenProvider) Assign(context.Context, string, uint64, string, uint64) (string, error) {
	return "", ErrAuthFailed
}

// GenPrefix is "".
func (nopTokenProvider) GenPrefix() (string, error) { return "", nil }

// InvalidateUser does nothing.
func (nopTokenProvider) InvalidateUser(string) {}

// Enable does nothing.
func (nopTokenProvider) Enable() {}

// Disable does nothing.
func (nopTokenProvider) Disable() {}
