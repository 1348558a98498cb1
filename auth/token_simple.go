package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Simple tokens (etcd server/auth/simple_token.go): "<prefix>.<index>",
// where the prefix is 16 random letters the proposing member drew and the
// index is the applying member's consistent index. They are registered in
// memory on every member when the Authenticate entry is applied, and live
// until they have been idle for the TTL.
const (
	simpleTokenLetters    = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	simpleTokenPrefixLen  = 16
	defaultSimpleTokenTTL = 300 * time.Second
	// simpleTokenSweepEvery is how often expired tokens are dropped
	// (etcd's simpleTokenTTLResolution).
	simpleTokenSweepEvery = time.Second
)

// ErrSimpleTokenReused is what Assign returns for a simple token that is
// already registered. etcd panics there; it can only happen when a prefix
// is proposed twice at the same index.
var ErrSimpleTokenReused = errors.New("auth: simple token is already assigned")

// simpleToken is one registered token.
type simpleToken struct {
	username string
	expires  time.Time
}

// simpleTokenProvider is the "simple" TokenProvider. While enabled, a
// goroutine drops expired tokens every sweepEvery; Disable stops it and
// waits for it to end, so a provider left disabled owns no goroutine.
type simpleTokenProvider struct {
	ttl        time.Duration
	waitIndex  func(ctx context.Context, index uint64) error
	sweepEvery time.Duration
	now        func() time.Time

	mu      sync.Mutex
	enabled bool
	tokens  map[string]*simpleToken
	stopc   chan struct{} // closed by Disable
	donec   chan struct{} // closed by the sweeper when it returns
}

// newSimpleTokenProvider makes a disabled simple provider; o.TTL <= 0
// means 300 s, as etcd.
func newSimpleTokenProvider(o TokenOptions) *simpleTokenProvider {
	ttl := o.TTL
	if ttl <= 0 {
		ttl = defaultSimpleTokenTTL
	}
	return &simpleTokenProvider{
		ttl:        ttl,
		waitIndex:  o.WaitIndex,
		sweepEvery: simpleTokenSweepEvery,
		now:        time.Now,
		tokens:     make(map[string]*simpleToken),
	}
}

// GenPrefix draws the 16 letters of a new token from crypto/rand.
func (p *simpleTokenProvider) GenPrefix() (string, error) {
	return genSimpleTokenPrefix()
}

func genSimpleTokenPrefix() (string, error) {
	out := make([]byte, 0, simpleTokenPrefixLen)
	buf := make([]byte, 2*simpleTokenPrefixLen)
	// Rejection sampling: 208 = 4*52, so b%52 is uniform for b < 208.
	const limit = 256 - 256%len(simpleTokenLetters)
	for len(out) < simpleTokenPrefixLen {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("auth: drawing a simple token prefix: %w", err)
		}
		for _, b := range buf {
			if int(b) >= limit {
				continue
			}
			out = append(out, simpleTokenLetters[int(b)%len(simpleTokenLetters)])
			if len(out) == simpleTokenPrefixLen {
				break
			}
		}
	}
	return string(out), nil
}

// Assign registers "<prefix>.<index>" for username and returns it. As
// etcd, a provider that is not enabled returns the token without
// registering it (it will not resolve), and revision is not used.
func (p *simpleTokenProvider) Assign(_ context.Context, username string, _ uint64, prefix string, index uint64) (string, error) {
	token := prefix + "." + strconv.FormatUint(index, 10)
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.enabled {
		return token, nil
	}
	if _, ok := p.tokens[token]; ok {
		return "", fmt.Errorf("%w: user %q, token fingerprint %s", ErrSimpleTokenReused, username, tokenFingerprint(token))
	}
	p.tokens[token] = &simpleToken{username: username, expires: p.now().Add(p.ttl)}
	return token, nil
}

// Info resolves token: it must be "<something>.<decimal index>"; Info
// waits (WaitIndex) until the member has applied index, so a token made
// by an entry this member has not applied yet still resolves, then finds
// the token and pushes its expiry to now+TTL (the TTL is an idle timeout).
// The identity's revision is the revision argument.
func (p *simpleTokenProvider) Info(ctx context.Context, token string, revision uint64) (*AuthInfo, bool) {
	_, indexStr, ok := strings.Cut(token, ".")
	if !ok || strings.Contains(indexStr, ".") {
		return nil, false
	}
	index, err := strconv.ParseUint(indexStr, 10, 64)
	if err != nil {
		return nil, false
	}
	if p.waitIndex != nil {
		if err := p.waitIndex(ctx, index); err != nil {
			return nil, false
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.tokens[token]
	if !ok {
		return nil, false
	}
	t.expires = p.now().Add(p.ttl)
	return &AuthInfo{Username: t.username, Revision: revision}, true
}

// InvalidateUser drops every token of username.
func (p *simpleTokenProvider) InvalidateUser(username string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for token, t := range p.tokens {
		if t.username == username {
			delete(p.tokens, token)
		}
	}
}

// Enable starts registering tokens and the goroutine that drops expired
// ones; enabling an enabled provider does nothing.
func (p *simpleTokenProvider) Enable() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.enabled {
		return
	}
	p.enabled = true
	p.stopc = make(chan struct{})
	p.donec = make(chan struct{})
	go p.sweeper(p.stopc, p.donec)
}

// Disable drops every token and stops the sweeping goroutine, waiting
// until it has returned.
func (p *simpleTokenProvider) Disable() {
	p.mu.Lock()
	wasEnabled := p.enabled
	stopc, donec := p.stopc, p.donec
	p.enabled = false
	p.stopc, p.donec = nil, nil
	p.tokens = make(map[string]*simpleToken)
	p.mu.Unlock()
	if wasEnabled {
		close(stopc)
		<-donec
	}
}

func (p *simpleTokenProvider) sweeper(stopc <-chan struct{}, donec chan<- struct{}) {
	defer close(donec)
	tick := time.NewTicker(p.sweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			p.sweep()
		case <-stopc:
			return
		}
	}
}

// sweep drops the tokens whose expiry has passed.
func (p *simpleTokenProvider) sweep() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for token, t := range p.tokens {
		if now.After(t.expires) {
			delete(p.tokens, token)
		}
	}
}

// tokenFingerprint names a token in messages without revealing it: the
// first 12 hex digits of its SHA-256, as etcd's redactToken.
func tokenFingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])[:12]
}
