package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ---- simple tokens ----

// tokTestClock is a settable clock for the simple provider.
type tokTestClock struct{ ns atomic.Int64 }

func (c *tokTestClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *tokTestClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// tokTestSimple makes an enabled simple provider that a test disables
// when it ends (so no sweeper goroutine outlives it).
func tokTestSimple(t *testing.T, o TokenOptions) *simpleTokenProvider {
	t.Helper()
	p := newSimpleTokenProvider(o)
	p.Enable()
	t.Cleanup(p.Disable)
	return p
}

func tokTestAssign(t *testing.T, p TokenProvider, user string, rev, index uint64) string {
	t.Helper()
	prefix, err := p.GenPrefix()
	if err != nil {
		t.Fatalf("GenPrefix: %v", err)
	}
	tok, err := p.Assign(context.Background(), user, rev, prefix, index)
	if err != nil {
		t.Fatalf("Assign(%q): %v", user, err)
	}
	return tok
}

func TestSimpleTokenFormat(t *testing.T) {
	p := tokTestSimple(t, TokenOptions{})
	re := regexp.MustCompile(`^[a-zA-Z]{16}$`)
	seen := map[string]bool{}
	var lower, upper bool
	for range 200 {
		prefix, err := p.GenPrefix()
		if err != nil {
			t.Fatal(err)
		}
		if !re.MatchString(prefix) {
			t.Fatalf("prefix %q is not 16 letters", prefix)
		}
		if seen[prefix] {
			t.Fatalf("prefix %q drawn twice", prefix)
		}
		seen[prefix] = true
		lower = lower || strings.ContainsAny(prefix, "abcdefghijklmnopqrstuvwxyz")
		upper = upper || strings.ContainsAny(prefix, "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
	}
	if !lower || !upper {
		t.Fatalf("3200 letters without both cases (lower %v, upper %v)", lower, upper)
	}

	tok, err := p.Assign(context.Background(), "alice", 99, "abcdefghijklmnop", 42)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "abcdefghijklmnop.42" {
		t.Fatalf("token %q, want abcdefghijklmnop.42", tok)
	}
	// The identity's revision is the store's revision passed to Info,
	// not the one at Assign.
	ai, ok := p.Info(context.Background(), tok, 7)
	if !ok || ai == nil || *ai != (AuthInfo{Username: "alice", Revision: 7}) {
		t.Fatalf("Info = %+v, %v; want alice@7", ai, ok)
	}
	// Index 0 (etcd's internal root token) and the largest index.
	for _, idx := range []uint64{0, ^uint64(0)} {
		tok := tokTestAssign(t, p, "root", 1, idx)
		if want := fmt.Sprintf(".%d", idx); !strings.HasSuffix(tok, want) {
			t.Fatalf("token %q does not end in %s", tok, want)
		}
		if ai, ok := p.Info(context.Background(), tok, 1); !ok || ai.Username != "root" {
			t.Fatalf("Info(%q) = %+v, %v", tok, ai, ok)
		}
	}
}

func TestSimpleTokenMalformed(t *testing.T) {
	p := tokTestSimple(t, TokenOptions{})
	tok, err := p.Assign(context.Background(), "alice", 1, "abcdefghijklmnop", 42)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Info(context.Background(), tok, 1); !ok {
		t.Fatalf("registered token %q does not resolve", tok)
	}
	for _, bad := range []string{
		"",
		"abcdefghijklmnop",
		"abcdefghijklmnop.",
		".42",
		"abcdefghijklmnop.42.",
		"abcdefghijklmnop.42.1",
		"abcdefghijklmnop.x",
		"abcdefghijklmnop.-42",
		"abcdefghijklmnop.+42",
		"abcdefghijklmnop.042",
		"abcdefghijklmnop.42 ",
		" abcdefghijklmnop.42",
		"Abcdefghijklmnop.42",
		"abcdefghijklmnop.43",
		"abcdefghijklmnop.18446744073709551658",
		"abcdefghijklmnop\x00.42",
	} {
		if ai, ok := p.Info(context.Background(), bad, 1); ok || ai != nil {
			t.Errorf("Info(%q) = %+v, %v; want invalid", bad, ai, ok)
		}
	}
}

func TestSimpleTokenWaitIndex(t *testing.T) {
	type ctxKey struct{}
	var (
		mu     sync.Mutex
		waited []uint64
	)
	errNotApplied := errors.New("not applied")
	o := TokenOptions{WaitIndex: func(ctx context.Context, index uint64) error {
		if ctx.Value(ctxKey{}) != "req" {
			t.Errorf("WaitIndex got a context that is not the request's")
		}
		mu.Lock()
		waited = append(waited, index)
		mu.Unlock()
		if index >= 100 {
			return errNotApplied
		}
		return nil
	}}
	p := tokTestSimple(t, o)
	ctx := context.WithValue(context.Background(), ctxKey{}, "req")
	ok42 := tokTestAssign(t, p, "alice", 1, 42)
	late := tokTestAssign(t, p, "alice", 1, 100)
	if _, ok := p.Info(ctx, ok42, 1); !ok {
		t.Fatalf("token at applied index 42 invalid")
	}
	// Registered, but the wait fails (the request's context ended).
	if _, ok := p.Info(ctx, late, 1); ok {
		t.Fatalf("token whose index wait failed is valid")
	}
	// Malformed tokens are rejected before waiting; unknown but well-formed
	// ones still wait (etcd waits first, then looks up).
	p.Info(ctx, "nodot", 1)
	p.Info(ctx, "zzzzzzzzzzzzzzzz.7", 1)
	mu.Lock()
	defer mu.Unlock()
	if want := []uint64{42, 100, 7}; !slices.Equal(waited, want) {
		t.Fatalf("WaitIndex called with %v, want %v", waited, want)
	}
}

func TestSimpleTokenTTLDefault(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{
		{0, 300 * time.Second},
		{-time.Second, 300 * time.Second},
		{5 * time.Second, 5 * time.Second},
	} {
		if got := newSimpleTokenProvider(TokenOptions{TTL: c.in}).ttl; got != c.want {
			t.Errorf("TTL %v: provider TTL %v, want %v", c.in, got, c.want)
		}
	}
}

// TestSimpleTokenSlidingTTL drives the expiry with a fake clock: each
// Info pushes the expiry to now+TTL, and a sweep drops a token only once
// its expiry has passed.
func TestSimpleTokenSlidingTTL(t *testing.T) {
	const ttl = 10 * time.Second
	clk := &tokTestClock{}
	clk.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	p := newSimpleTokenProvider(TokenOptions{TTL: ttl})
	p.now = clk.now
	p.sweepEvery = time.Hour // sweeps are called by hand
	p.Enable()
	t.Cleanup(p.Disable)

	has := func(tok string) bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		_, ok := p.tokens[tok]
		return ok
	}
	used := tokTestAssign(t, p, "alice", 1, 1)
	idle := tokTestAssign(t, p, "bob", 1, 1)
	for i := range 5 {
		clk.advance(ttl - time.Second)
		if _, ok := p.Info(context.Background(), used, 1); !ok {
			t.Fatalf("token used every %v of a %v TTL expired", ttl-time.Second, ttl)
		}
		p.sweep()
		if want := i == 0; has(idle) != want {
			t.Fatalf("%v after Assign: idle token registered %v, want %v", time.Duration(i+1)*(ttl-time.Second), has(idle), want)
		}
	}
	if _, ok := p.Info(context.Background(), idle, 1); ok {
		t.Fatalf("swept idle token still valid")
	}
	clk.advance(ttl) // exactly at the expiry: not yet expired
	p.sweep()
	if !has(used) {
		t.Fatalf("token dropped at exactly its expiry")
	}
	// Past its expiry but not yet swept: Info does not look at the expiry
	// (etcd: only the sweeper does), so the token resolves and is renewed.
	clk.advance(time.Nanosecond)
	if _, ok := p.Info(context.Background(), used, 1); !ok {
		t.Fatalf("expired but unswept token refused")
	}
	p.sweep()
	if !has(used) {
		t.Fatalf("token renewed by Info was swept")
	}
	clk.advance(ttl + time.Nanosecond)
	p.sweep()
	if _, ok := p.Info(context.Background(), used, 1); ok {
		t.Fatalf("token idle for longer than the TTL still valid")
	}
}

// TestSimpleTokenSweeper checks the real ticker goroutine with short
// durations: a token in use stays, an idle one goes.
func TestSimpleTokenSweeper(t *testing.T) {
	p := newSimpleTokenProvider(TokenOptions{TTL: 200 * time.Millisecond})
	p.sweepEvery = 20 * time.Millisecond
	p.Enable()
	t.Cleanup(p.Disable)
	used := tokTestAssign(t, p, "alice", 1, 1)
	idle := tokTestAssign(t, p, "bob", 1, 1)
	for range 8 { // 8 × 50 ms: twice the TTL
		time.Sleep(50 * time.Millisecond)
		if _, ok := p.Info(context.Background(), used, 1); !ok {
			t.Fatalf("token in use expired")
		}
	}
	if _, ok := p.Info(context.Background(), idle, 1); ok {
		t.Fatalf("token idle for 2×TTL still valid")
	}
	deadline := time.Now().Add(time.Second)
	for {
		if _, ok := p.Info(context.Background(), used, 1); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("token idle for a second with a 200ms TTL still valid")
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func TestSimpleTokenInvalidateUser(t *testing.T) {
	p := tokTestSimple(t, TokenOptions{})
	a1 := tokTestAssign(t, p, "alice", 1, 1)
	a2 := tokTestAssign(t, p, "alice", 1, 2)
	b := tokTestAssign(t, p, "bob", 1, 3)
	p.InvalidateUser("alice")
	p.InvalidateUser("nobody")
	for _, tok := range []string{a1, a2} {
		if _, ok := p.Info(context.Background(), tok, 1); ok {
			t.Errorf("alice's token %q valid after InvalidateUser", tok)
		}
	}
	if ai, ok := p.Info(context.Background(), b, 1); !ok || ai.Username != "bob" {
		t.Errorf("bob's token = %+v, %v after InvalidateUser(alice)", ai, ok)
	}
	// A new token for alice works again.
	if _, ok := p.Info(context.Background(), tokTestAssign(t, p, "alice", 1, 4), 1); !ok {
		t.Errorf("alice's new token invalid")
	}
}

func TestSimpleTokenDisable(t *testing.T) {
	p := newSimpleTokenProvider(TokenOptions{})
	t.Cleanup(p.Disable)

	// Disabled: Assign returns the token but does not register it, as
	// etcd's (its keeper is nil then).
	early := tokTestAssign(t, p, "alice", 1, 1)
	if !strings.HasSuffix(early, ".1") {
		t.Fatalf("token %q", early)
	}
	p.Disable() // disabling a disabled provider is harmless
	p.Enable()
	donec := p.donec
	p.Enable() // no second sweeper
	if p.donec != donec {
		t.Fatalf("second Enable started another sweeper")
	}
	if _, ok := p.Info(context.Background(), early, 1); ok {
		t.Fatalf("token assigned while disabled is valid")
	}
	tok := tokTestAssign(t, p, "alice", 1, 2)
	if _, ok := p.Info(context.Background(), tok, 1); !ok {
		t.Fatalf("token invalid while enabled")
	}
	p.Disable()
	select {
	case <-donec:
	default:
		t.Fatalf("sweeper still running after Disable returned")
	}
	if _, ok := p.Info(context.Background(), tok, 1); ok {
		t.Fatalf("token valid after Disable")
	}
	p.Enable()
	if _, ok := p.Info(context.Background(), tok, 1); ok {
		t.Fatalf("token from before Disable valid after re-Enable")
	}
	if _, ok := p.Info(context.Background(), tokTestAssign(t, p, "bob", 1, 3), 1); !ok {
		t.Fatalf("new token invalid after re-Enable")
	}
}

func TestSimpleTokenReused(t *testing.T) {
	p := tokTestSimple(t, TokenOptions{})
	tok, err := p.Assign(context.Background(), "alice", 1, "abcdefghijklmnop", 5)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Assign(context.Background(), "bob", 1, "abcdefghijklmnop", 5)
	if !errors.Is(err, ErrSimpleTokenReused) {
		t.Fatalf("second Assign of %q: %v, want ErrSimpleTokenReused", tok, err)
	}
	if strings.Contains(err.Error(), "abcdefghijklmnop") {
		t.Fatalf("error reveals the token: %v", err)
	}
	// The first owner keeps it.
	if ai, ok := p.Info(context.Background(), tok, 1); !ok || ai.Username != "alice" {
		t.Fatalf("Info = %+v, %v; want alice", ai, ok)
	}
}

// TestSimpleTokenConcurrent is for -race: every method at once.
func TestSimpleTokenConcurrent(t *testing.T) {
	p := newSimpleTokenProvider(TokenOptions{TTL: 50 * time.Millisecond})
	p.sweepEvery = time.Millisecond
	p.Enable()
	t.Cleanup(p.Disable)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			user := fmt.Sprintf("u%d", g%2)
			for i := range 300 {
				prefix, _ := p.GenPrefix()
				tok, err := p.Assign(context.Background(), user, 1, prefix, uint64(i))
				if err != nil {
					t.Errorf("Assign: %v", err)
					return
				}
				p.Info(context.Background(), tok, 1)
				switch i % 50 {
				case 10:
					p.InvalidateUser(user)
				case 20:
					if g == 0 {
						p.Disable()
						p.Enable()
					}
				}
			}
		})
	}
	wg.Wait()
}

// ---- JWT ----

// tokTestKeySet is one key pair's files, plus a certificate for the
// public key when the type has one.
type tokTestKeySet struct {
	priv, pub, cert string
}

var (
	tokTestKeysOnce sync.Once
	tokTestKeyPEMs  map[string][3][]byte // kind -> priv, pub, cert PEM
)

// tokTestGenKeys makes two keys of each type once per test binary (RSA
// key generation is slow).
func tokTestGenKeys(t testing.TB) map[string][3][]byte {
	tokTestKeysOnce.Do(func() {
		m := map[string][3][]byte{}
		for _, n := range []string{"a", "b"} {
			rk, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			m["rsa-"+n] = tokTestEncode(rk, &rk.PublicKey, x509.MarshalPKCS1PrivateKey(rk), "RSA PRIVATE KEY")
			p8, err := x509.MarshalPKCS8PrivateKey(rk)
			if err != nil {
				panic(err)
			}
			m["rsa8-"+n] = tokTestEncode(rk, &rk.PublicKey, p8, "PRIVATE KEY")
			for _, c := range []struct {
				name  string
				curve elliptic.Curve
			}{{"ec-", elliptic.P256()}, {"ec384-", elliptic.P384()}} {
				ek, err := ecdsa.GenerateKey(c.curve, rand.Reader)
				if err != nil {
					panic(err)
				}
				sec1, err := x509.MarshalECPrivateKey(ek)
				if err != nil {
					panic(err)
				}
				m[c.name+n] = tokTestEncode(ek, &ek.PublicKey, sec1, "EC PRIVATE KEY")
			}
			_, edk, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				panic(err)
			}
			ed8, err := x509.MarshalPKCS8PrivateKey(edk)
			if err != nil {
				panic(err)
			}
			m["ed-"+n] = tokTestEncode(edk, edk.Public(), ed8, "PRIVATE KEY")
			secret := make([]byte, 32)
			if _, err := rand.Read(secret); err != nil {
				panic(err)
			}
			m["hmac-"+n] = [3][]byte{secret, nil, nil}
		}
		tokTestKeyPEMs = m
	})
	return tokTestKeyPEMs
}

func tokTestEncode(priv, pub any, privDER []byte, privType string) [3][]byte {
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "etckit-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		panic(err)
	}
	return [3][]byte{
		pem.EncodeToMemory(&pem.Block{Type: privType, Bytes: privDER}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}),
	}
}

// tokTestKeyFiles writes key kind ("rsa-a", "ec-b", "hmac-a", ...) to
// files in a temporary directory.
func tokTestKeyFiles(t *testing.T, kind string) tokTestKeySet {
	t.Helper()
	pems, ok := tokTestGenKeys(t)[kind]
	if !ok {
		t.Fatalf("no test key %q", kind)
	}
	dir := t.TempDir()
	var ks tokTestKeySet
	for i, dst := range []*string{&ks.priv, &ks.pub, &ks.cert} {
		if pems[i] == nil {
			continue
		}
		*dst = filepath.Join(dir, []string{"priv.pem", "pub.pem", "cert.pem"}[i])
		if err := os.WriteFile(*dst, pems[i], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ks
}

func tokTestJWT(t *testing.T, spec string) *jwtProvider {
	t.Helper()
	tp, err := NewTokenProvider(spec, TokenOptions{})
	if err != nil {
		t.Fatalf("NewTokenProvider(%q): %v", spec, err)
	}
	p, ok := tp.(*jwtProvider)
	if !ok {
		t.Fatalf("NewTokenProvider(%q) gave %T", spec, tp)
	}
	return p
}

// tokTestSegment decodes one base64url segment of a JWT.
func tokTestSegment(t *testing.T, tok string, i int) []byte {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("JWT %q has %d parts", tok, len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatalf("segment %d of %q: %v", i, tok, err)
	}
	return b
}

// tokTestSign signs claims with method and key, for crafted tokens.
func tokTestSign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("signing a %s test token: %v", method.Alg(), err)
	}
	return s
}

func TestJWTRoundTrip(t *testing.T) {
	for _, c := range []struct{ method, key string }{
		{"RS256", "rsa-a"}, {"RS384", "rsa8-a"}, {"RS512", "rsa-a"},
		{"PS256", "rsa-a"}, {"PS512", "rsa8-a"},
		{"ES256", "ec-a"}, {"ES384", "ec384-a"},
		{"EdDSA", "ed-a"},
		{"HS256", "hmac-a"}, {"HS384", "hmac-a"}, {"HS512", "hmac-a"},
	} {
		t.Run(c.method, func(t *testing.T) {
			ks := tokTestKeyFiles(t, c.key)
			spec := "jwt,sign-method=" + c.method + ",priv-key=" + ks.priv
			if ks.pub != "" {
				spec += ",pub-key=" + ks.pub
			}
			p := tokTestJWT(t, spec)
			if prefix, err := p.GenPrefix(); err != nil || prefix != "" {
				t.Fatalf("GenPrefix = %q, %v", prefix, err)
			}
			before := time.Now().Unix()
			tok, err := p.Assign(context.Background(), "alice", 17, "ignored", 99)
			if err != nil {
				t.Fatal(err)
			}
			after := time.Now().Unix()
			if h := string(tokTestSegment(t, tok, 0)); h != `{"alg":"`+c.method+`","typ":"JWT"}` {
				t.Fatalf("header %s", h)
			}
			payload := tokTestSegment(t, tok, 1)
			var claims map[string]any
			if err := json.Unmarshal(payload, &claims); err != nil {
				t.Fatal(err)
			}
			exp := int64(claims["exp"].(float64))
			if exp < before+300 || exp > after+300 {
				t.Fatalf("exp %d not now+5m (%d..%d)", exp, before+300, after+300)
			}
			if want := fmt.Sprintf(`{"exp":%d,"revision":17,"username":"alice"}`, exp); string(payload) != want {
				t.Fatalf("payload %s, want %s", payload, want)
			}
			// The revision is the claim's, not Info's argument.
			ai, ok := p.Info(context.Background(), tok, 1000)
			if !ok || *ai != (AuthInfo{Username: "alice", Revision: 17}) {
				t.Fatalf("Info = %+v, %v; want alice@17", ai, ok)
			}
			// Stateless: disabling or invalidating changes nothing.
			p.InvalidateUser("alice")
			p.Disable()
			if _, ok := p.Info(context.Background(), tok, 1); !ok {
				t.Fatalf("JWT invalid after InvalidateUser/Disable")
			}
		})
	}
}

func TestJWTTTLOption(t *testing.T) {
	ks := tokTestKeyFiles(t, "hmac-a")
	p := tokTestJWT(t, "jwt,sign-method=HS256,ttl=1h,priv-key="+ks.priv)
	tok, err := p.Assign(context.Background(), "u", 1, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var claims struct{ Exp int64 }
	if err := json.Unmarshal(tokTestSegment(t, tok, 1), &claims); err != nil {
		t.Fatal(err)
	}
	if d := claims.Exp - time.Now().Unix(); d < 3590 || d > 3601 {
		t.Fatalf("exp is now%+ds, want about +3600 s", d)
	}
}

func TestJWTCertificateAndPKCS8(t *testing.T) {
	for _, c := range []struct{ method, key string }{
		{"RS256", "rsa-a"}, {"RS256", "rsa8-a"}, {"PS384", "rsa-a"}, {"ES256", "ec-a"},
	} {
		ks := tokTestKeyFiles(t, c.key)
		p := tokTestJWT(t, "jwt,sign-method="+c.method+",priv-key="+ks.priv+",pub-key="+ks.cert)
		tok, err := p.Assign(context.Background(), "bob", 3, "", 0)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.key, err)
		}
		verifier := tokTestJWT(t, "jwt,sign-method="+c.method+",pub-key="+ks.cert)
		if ai, ok := verifier.Info(context.Background(), tok, 0); !ok || ai.Username != "bob" {
			t.Fatalf("%s %s: verify with certificate: %+v, %v", c.method, c.key, ai, ok)
		}
	}
	// Ed25519 public keys must be PKIX; a certificate is refused as etcd.
	ks := tokTestKeyFiles(t, "ed-a")
	if _, err := NewTokenProvider("jwt,sign-method=EdDSA,pub-key="+ks.cert, TokenOptions{}); err == nil {
		t.Fatalf("EdDSA with a certificate as pub-key accepted")
	}
}

func TestJWTKeyMismatch(t *testing.T) {
	for _, c := range []struct{ method, a, b string }{
		{"RS256", "rsa-a", "rsa-b"}, {"PS256", "rsa8-a", "rsa-b"},
		{"ES256", "ec-a", "ec-b"}, {"ES256", "ec-a", "ec384-a"}, {"EdDSA", "ed-a", "ed-b"},
	} {
		a, b := tokTestKeyFiles(t, c.a), tokTestKeyFiles(t, c.b)
		_, err := NewTokenProvider("jwt,sign-method="+c.method+",priv-key="+a.priv+",pub-key="+b.pub, TokenOptions{})
		if !errors.Is(err, ErrKeyMismatch) {
			t.Errorf("%s %s/%s: %v, want ErrKeyMismatch", c.method, c.a, c.b, err)
		}
		// And the matching pair is fine.
		tokTestJWT(t, "jwt,sign-method="+c.method+",priv-key="+a.priv+",pub-key="+a.pub)
	}
}

func TestJWTMissingKey(t *testing.T) {
	ks := tokTestKeyFiles(t, "rsa-a")
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []string{
		"jwt,sign-method=RS256",
		"jwt,sign-method=ES256,pub-key=,priv-key=",
		"jwt,sign-method=EdDSA",
		"jwt,sign-method=HS256",
		"jwt,sign-method=HS256,pub-key=" + ks.pub, // HMAC needs priv-key
		"jwt,sign-method=HS256,priv-key=" + empty,
		"jwt,sign-method=RS256,priv-key=" + empty,
	} {
		if _, err := NewTokenProvider(spec, TokenOptions{}); !errors.Is(err, ErrMissingKey) {
			t.Errorf("%s: %v, want ErrMissingKey", spec, err)
		}
	}
}

func TestJWTVerifyOnly(t *testing.T) {
	for _, c := range []struct{ method, key string }{
		{"RS256", "rsa-a"}, {"PS256", "rsa-a"}, {"ES256", "ec-a"}, {"EdDSA", "ed-a"},
	} {
		ks := tokTestKeyFiles(t, c.key)
		signer := tokTestJWT(t, "jwt,sign-method="+c.method+",priv-key="+ks.priv)
		verifier := tokTestJWT(t, "jwt,sign-method="+c.method+",pub-key="+ks.pub)
		if _, err := verifier.Assign(context.Background(), "alice", 1, "", 0); !errors.Is(err, ErrVerifyOnly) {
			t.Fatalf("%s verify-only Assign: %v, want ErrVerifyOnly", c.method, err)
		}
		tok, err := signer.Assign(context.Background(), "alice", 5, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if ai, ok := verifier.Info(context.Background(), tok, 0); !ok || *ai != (AuthInfo{Username: "alice", Revision: 5}) {
			t.Fatalf("%s verify-only Info = %+v, %v", c.method, ai, ok)
		}
		// A token of another key pair is refused.
		other := tokTestKeyFiles(t, strings.TrimSuffix(c.key, "-a")+"-b")
		tok2, err := tokTestJWT(t, "jwt,sign-method="+c.method+",priv-key="+other.priv).Assign(context.Background(), "alice", 5, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := verifier.Info(context.Background(), tok2, 0); ok {
			t.Fatalf("%s: token of another key accepted", c.method)
		}
	}
}

func TestJWTExpired(t *testing.T) {
	ks := tokTestKeyFiles(t, "ec-a")
	p := tokTestJWT(t, "jwt,sign-method=ES256,ttl=-2s,priv-key="+ks.priv)
	tok, err := p.Assign(context.Background(), "alice", 1, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Info(context.Background(), tok, 1); ok {
		t.Fatalf("token with exp 2 s ago accepted")
	}
	// ttl=0s: exp is this second, which jwt/v5 treats as expired
	// (valid only while now < exp).
	p0 := tokTestJWT(t, "jwt,sign-method=ES256,ttl=0s,priv-key="+ks.priv)
	tok0, err := p0.Assign(context.Background(), "alice", 1, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p0.Info(context.Background(), tok0, 1); ok {
		t.Fatalf("token with ttl 0 accepted")
	}
}

func TestJWTWrongAlgorithm(t *testing.T) {
	rsaKS := tokTestKeyFiles(t, "rsa-a")
	p := tokTestJWT(t, "jwt,sign-method=RS256,priv-key="+rsaKS.priv+",pub-key="+rsaKS.pub)
	pubPEM, err := os.ReadFile(rsaKS.pub)
	if err != nil {
		t.Fatal(err)
	}
	claims := func() jwt.MapClaims {
		return jwt.MapClaims{"username": "root", "revision": 1, "exp": time.Now().Add(time.Hour).Unix()}
	}
	// The classic confusion: HMAC keyed with the RSA public key's PEM.
	hs := tokTestSign(t, jwt.SigningMethodHS256, pubPEM, claims())
	if _, ok := p.Info(context.Background(), hs, 1); ok {
		t.Fatalf("HS256 token keyed with the RSA public key accepted by RS256")
	}
	// Same key, other RSA algorithms.
	priv, err := jwt.ParseRSAPrivateKeyFromPEM(tokTestGenKeys(t)["rsa-a"][0])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []jwt.SigningMethod{jwt.SigningMethodRS512, jwt.SigningMethodPS256} {
		if _, ok := p.Info(context.Background(), tokTestSign(t, m, priv, claims()), 1); ok {
			t.Fatalf("%s token accepted by an RS256 provider", m.Alg())
		}
	}
	// And RS256 itself, to show the crafted claims are otherwise fine.
	if _, ok := p.Info(context.Background(), tokTestSign(t, jwt.SigningMethodRS256, priv, claims()), 1); !ok {
		t.Fatalf("crafted RS256 token refused")
	}
	// alg "none".
	none := tokTestSign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims())
	if _, ok := p.Info(context.Background(), none, 1); ok {
		t.Fatalf("alg none accepted")
	}
	// An HS256 provider refuses an HS512 token made with its own secret.
	hk := tokTestKeyFiles(t, "hmac-a")
	hp := tokTestJWT(t, "jwt,sign-method=HS256,priv-key="+hk.priv)
	if _, ok := hp.Info(context.Background(), tokTestSign(t, jwt.SigningMethodHS512, tokTestGenKeys(t)["hmac-a"][0], claims()), 1); ok {
		t.Fatalf("HS512 token accepted by an HS256 provider")
	}
}

func TestJWTTampered(t *testing.T) {
	const seed = 20260823
	t.Logf("seed %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, 0x70c3))
	for _, c := range []struct{ method, key string }{{"RS256", "rsa-a"}, {"ES256", "ec-a"}, {"EdDSA", "ed-a"}, {"HS256", "hmac-a"}} {
		ks := tokTestKeyFiles(t, c.key)
		p := tokTestJWT(t, "jwt,sign-method="+c.method+",priv-key="+ks.priv)
		tok, err := p.Assign(context.Background(), "alice", 1, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(tok, ".")
		// Another user's claims under alice's signature.
		forged := base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(tokTestSegment(t, tok, 1)), `"alice"`, `"root"`, 1)))
		if _, ok := p.Info(context.Background(), parts[0]+"."+forged+"."+parts[2], 1); ok {
			t.Fatalf("%s: payload swapped under the old signature accepted", c.method)
		}
		// Random byte flips in the signature's bytes.
		sig := tokTestSegment(t, tok, 2)
		for range 20 {
			bad := slices.Clone(sig)
			bad[rng.IntN(len(bad))] ^= byte(1 + rng.IntN(255))
			s := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(bad)
			if _, ok := p.Info(context.Background(), s, 1); ok {
				t.Fatalf("%s: flipped signature accepted (seed %d)", c.method, seed)
			}
		}
		for _, s := range []string{parts[0] + "." + parts[1], parts[0] + "." + parts[1] + ".", tok + ".", "", "a.b.c"} {
			if _, ok := p.Info(context.Background(), s, 1); ok {
				t.Fatalf("%s: %q accepted", c.method, s)
			}
		}
	}
}

// TestJWTClaims crafts correctly signed tokens with odd claims; what is
// accepted is what etcd accepts (see interop's TestAuthTokenJWTClaimsDiff).
func TestJWTClaims(t *testing.T) {
	secret := tokTestGenKeys(t)["hmac-a"][0]
	ks := tokTestKeyFiles(t, "hmac-a")
	p := tokTestJWT(t, "jwt,sign-method=HS256,priv-key="+ks.priv)
	future := time.Now().Add(time.Hour).Unix()
	for _, c := range []struct {
		name   string
		claims jwt.MapClaims
		want   *AuthInfo
	}{
		{"good", jwt.MapClaims{"username": "u", "revision": 4, "exp": future}, &AuthInfo{"u", 4}},
		{"no username", jwt.MapClaims{"revision": 4, "exp": future}, nil},
		{"numeric username", jwt.MapClaims{"username": 5, "revision": 4, "exp": future}, nil},
		{"null username", jwt.MapClaims{"username": nil, "revision": 4, "exp": future}, nil},
		{"no revision", jwt.MapClaims{"username": "u", "exp": future}, nil},
		{"string revision", jwt.MapClaims{"username": "u", "revision": "4", "exp": future}, nil},
		{"fractional revision", jwt.MapClaims{"username": "u", "revision": 4.9, "exp": future}, &AuthInfo{"u", 4}},
		{"empty username", jwt.MapClaims{"username": "", "revision": 0, "exp": future}, &AuthInfo{"", 0}},
		// jwt/v5 by default checks exp only when present; etcd uses the defaults.
		{"no exp", jwt.MapClaims{"username": "u", "revision": 4}, &AuthInfo{"u", 4}},
		{"string exp", jwt.MapClaims{"username": "u", "revision": 4, "exp": "never"}, nil},
		{"past exp", jwt.MapClaims{"username": "u", "revision": 4, "exp": time.Now().Add(-time.Minute).Unix()}, nil},
		{"future nbf", jwt.MapClaims{"username": "u", "revision": 4, "exp": future, "nbf": future}, nil},
		{"future iat", jwt.MapClaims{"username": "u", "revision": 4, "exp": future, "iat": future}, &AuthInfo{"u", 4}},
		{"extra claims", jwt.MapClaims{"username": "u", "revision": 4, "exp": future, "aud": "x", "iss": "y"}, &AuthInfo{"u", 4}},
	} {
		ai, ok := p.Info(context.Background(), tokTestSign(t, jwt.SigningMethodHS256, secret, c.claims), 0)
		switch {
		case c.want == nil && ok:
			t.Errorf("%s: accepted as %+v", c.name, ai)
		case c.want != nil && (!ok || *ai != *c.want):
			t.Errorf("%s: Info = %+v, %v; want %+v", c.name, ai, ok, c.want)
		}
	}
}

func TestJWTOptionErrors(t *testing.T) {
	rsaKS, ecKS := tokTestKeyFiles(t, "rsa-a"), tokTestKeyFiles(t, "ec-a")
	garbage := filepath.Join(t.TempDir(), "garbage")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, c := range []struct {
		spec string
		is   []error
	}{
		{"jwt", []error{ErrInvalidAuthOpts, ErrInvalidAuthMethod}},
		{"jwt,priv-key=" + rsaKS.priv, []error{ErrInvalidAuthOpts, ErrInvalidAuthMethod}},
		{"jwt,sign-method=rs256,priv-key=" + rsaKS.priv, []error{ErrInvalidAuthOpts, ErrInvalidAuthMethod}},
		{"jwt,sign-method=RS256,ttl=5,priv-key=" + rsaKS.priv, []error{ErrInvalidAuthOpts}},
		{"jwt,sign-method=RS256,priv-key=" + missing, []error{ErrInvalidAuthOpts, os.ErrNotExist}},
		{"jwt,sign-method=HS256,priv-key=" + rsaKS.priv + ",pub-key=" + missing, []error{ErrInvalidAuthOpts, os.ErrNotExist}},
		{"jwt,sign-method=none,priv-key=" + rsaKS.priv, []error{ErrInvalidAuthMethod}},
		{"jwt,sign-method=RS256,priv-key=" + garbage, []error{jwt.ErrKeyMustBePEMEncoded}},
		{"jwt,sign-method=RS256,pub-key=" + garbage, []error{jwt.ErrKeyMustBePEMEncoded}},
		{"jwt,sign-method=RS256,priv-key=" + ecKS.priv, nil},
		{"jwt,sign-method=ES256,pub-key=" + rsaKS.pub, []error{jwt.ErrNotECPublicKey}},
		{"jwt,sign-method=EdDSA,priv-key=" + ecKS.priv, nil}, // SEC1 is not PKCS8
	} {
		_, err := NewTokenProvider(c.spec, TokenOptions{})
		if err == nil {
			t.Errorf("%s: accepted", c.spec)
			continue
		}
		for _, want := range c.is {
			if !errors.Is(err, want) {
				t.Errorf("%s: %v is not %v", c.spec, err, want)
			}
		}
		// As etcd: only option problems are ErrInvalidAuthOpts, key
		// problems are not.
		if got, want := errors.Is(err, ErrInvalidAuthOpts), slices.Contains(c.is, ErrInvalidAuthOpts); got != want {
			t.Errorf("%s: %v: errors.Is(ErrInvalidAuthOpts) = %v, want %v", c.spec, err, got, want)
		}
	}

	// Unknown options only warn, naming the keys (not the values).
	var warned []string
	warn := func(msg string, args ...any) { warned = append(warned, fmt.Sprint(append([]any{msg}, args...)...)) }
	if _, err := NewTokenProvider("jwt,sign-method=RS256,zeta=1,alpha=secretvalue,priv-key="+rsaKS.priv, TokenOptions{Warn: warn}); err != nil {
		t.Fatal(err)
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "unknown JWT options") || !strings.Contains(warned[0], "[alpha zeta]") || strings.Contains(warned[0], "secretvalue") {
		t.Fatalf("warnings %q", warned)
	}
}

func TestNewTokenProviderSpecs(t *testing.T) {
	hk := tokTestKeyFiles(t, "hmac-a")
	for _, c := range []struct {
		spec string
		kind string // "simple", "jwt", "nop" or "" for an error
	}{
		{"simple", "simple"},
		{"simple,foo=bar", "simple"},
		{"simple,=", "simple"},
		{"", "nop"},
		{"jwt,sign-method=HS256,priv-key=" + hk.priv, "jwt"},
		{"jwt,priv-key=" + hk.priv + ",sign-method=HS256,ttl=", "jwt"},
		{"simple,foo", ""},
		{"simple,", ""},
		{",", ""},
		{"simple,a=b=c", ""},
		{"simple,a=1,a=2", ""},
		{"jwt,sign-method=HS256,sign-method=HS256,priv-key=" + hk.priv, ""},
		{"SIMPLE", ""},
		{" simple", ""},
		{"simple ", ""},
		{"nop", ""},
		{"jwt", ""},
	} {
		var warned []string
		tp, err := NewTokenProvider(c.spec, TokenOptions{Warn: func(msg string, _ ...any) { warned = append(warned, msg) }})
		var kind string
		switch tp.(type) {
		case *simpleTokenProvider:
			kind = "simple"
		case *jwtProvider:
			kind = "jwt"
		case nopTokenProvider:
			kind = "nop"
		}
		if kind != c.kind {
			t.Errorf("%q: provider %T (%v), want %q", c.spec, tp, err, c.kind)
			continue
		}
		if c.kind == "" {
			if !errors.Is(err, ErrInvalidAuthOpts) {
				t.Errorf("%q: %v, want ErrInvalidAuthOpts", c.spec, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: provider and error %v", c.spec, err)
		}
		if want := c.kind == "simple"; slices.Contains(warned, "simple token is not cryptographically signed") != want {
			t.Errorf("%q: warnings %q", c.spec, warned)
		}
		tp.Disable()
	}
}

func TestNopTokenProvider(t *testing.T) {
	tp, err := NewTokenProvider("", TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tp.Enable()
	defer tp.Disable()
	if prefix, err := tp.GenPrefix(); prefix != "" || err != nil {
		t.Fatalf("GenPrefix = %q, %v", prefix, err)
	}
	if tok, err := tp.Assign(context.Background(), "root", 1, "", 1); !errors.Is(err, ErrAuthFailed) || tok != "" {
		t.Fatalf("Assign = %q, %v; want ErrAuthFailed", tok, err)
	}
	for _, tok := range []string{"", "abcdefghijklmnop.1", "a.b.c"} {
		if ai, ok := tp.Info(context.Background(), tok, 1); ok || ai != nil {
			t.Fatalf("Info(%q) = %+v, %v", tok, ai, ok)
		}
	}
}

// ---- fuzzing ----

// FuzzTokenInfo feeds arbitrary tokens to the simple and JWT providers:
// none may panic, and whatever resolves must be an identity that was
// actually issued.
func FuzzTokenInfo(f *testing.F) {
	simple := newSimpleTokenProvider(TokenOptions{WaitIndex: func(context.Context, uint64) error { return nil }})
	simple.Enable()
	f.Cleanup(simple.Disable)
	simpleTok, err := simple.Assign(context.Background(), "alice", 1, "abcdefghijklmnop", 42)
	if err != nil {
		f.Fatal(err)
	}

	secret := []byte("fuzz-secret-0123456789")
	hs := &jwtProvider{method: jwt.SigningMethodHS256, signKey: secret, verifyKey: secret, ttl: time.Hour}
	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	ed := &jwtProvider{method: jwt.SigningMethodEdDSA, signKey: edPriv, verifyKey: edPriv.Public(), ttl: time.Hour}
	hsTok, err := hs.Assign(context.Background(), "alice", 7, "", 0)
	if err != nil {
		f.Fatal(err)
	}
	edTok, err := ed.Assign(context.Background(), "alice", 7, "", 0)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		simpleTok, "abcdefghijklmnop.", ".42", "a.b.c", "", ".", "..",
		hsTok, edTok, hsTok + ".", strings.ToUpper(hsTok),
		"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJ1c2VybmFtZSI6InJvb3QiLCJyZXZpc2lvbiI6MX0.",
		"eyJ.eyJ.eyJ",
	} {
		f.Add(s)
	}
	want := AuthInfo{Username: "alice", Revision: 7}
	f.Fuzz(func(t *testing.T, tok string) {
		if ai, ok := simple.Info(context.Background(), tok, 1); ok && (tok != simpleTok || ai.Username != "alice") {
			t.Fatalf("simple: %q resolved to %+v", tok, ai)
		}
		for _, p := range []*jwtProvider{hs, ed} {
			if ai, ok := p.Info(context.Background(), tok, 1); ok && *ai != want {
				t.Fatalf("%s: %q resolved to %+v", p.method.Alg(), tok, ai)
			}
		}
	})
}

// FuzzParseTokenOpts checks the --auth-token parser on arbitrary specs:
// no panic, and a spec it accepts is exactly "type(,key=value)*" with
// distinct keys.
func FuzzParseTokenOpts(f *testing.F) {
	for _, s := range []string{
		"simple", "", "jwt,sign-method=RS256,pub-key=a,priv-key=b,ttl=5m",
		"simple,a", "simple,a=b=c", "simple,a=1,a=2", ",", "=", "jwt,=,", "jwt,sign-method=none",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		typ, opts, err := parseTokenOpts(spec)
		if err != nil {
			if !errors.Is(err, ErrInvalidAuthOpts) {
				t.Fatalf("%q: error %v is not ErrInvalidAuthOpts", spec, err)
			}
			return
		}
		if strings.Contains(typ, ",") || len(opts) != strings.Count(spec, ",") {
			t.Fatalf("%q: type %q, %d options", spec, typ, len(opts))
		}
		keys := make([]string, 0, len(opts))
		for k, v := range opts {
			if strings.ContainsAny(k, ",=") || strings.ContainsAny(v, ",=") {
				t.Fatalf("%q: option %q=%q", spec, k, v)
			}
			keys = append(keys, k)
		}
		// Rebuilding from the parts in some order gives the same set.
		slices.Sort(keys)
		rebuilt := typ
		for _, k := range keys {
			rebuilt += "," + k + "=" + opts[k]
		}
		typ2, opts2, err := parseTokenOpts(rebuilt)
		if err != nil || typ2 != typ || len(opts2) != len(opts) {
			t.Fatalf("%q: rebuilt %q parses to %q %v %v", spec, rebuilt, typ2, opts2, err)
		}
		// Whatever parses, NewTokenProvider must not panic on it either.
		// Key options would make it read files the fuzzer names, so
		// those specs stop here.
		if _, ok := opts[jwtOptPublicKey]; ok {
			return
		}
		if _, ok := opts[jwtOptPrivateKey]; ok {
			return
		}
		if tp, err := NewTokenProvider(spec, TokenOptions{}); err == nil {
			tp.Disable()
		}
	})
}
