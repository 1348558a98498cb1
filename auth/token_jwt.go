package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The options of "--auth-token jwt,..." (etcd server/auth/options.go).
const (
	jwtOptSignMethod = "sign-method"
	jwtOptPublicKey  = "pub-key"
	jwtOptPrivateKey = "priv-key"
	jwtOptTTL        = "ttl"

	// defaultJWTTTL is the lifetime of a JWT without a ttl option
	// (--auth-token-ttl does not apply to JWTs).
	defaultJWTTTL = 5 * time.Minute
)

// jwtProvider is the "jwt" TokenProvider. Its tokens are stateless: the
// claims are exactly etcd's (username, revision, exp), so a token either
// of them mints with the same keys is accepted by the other.
type jwtProvider struct {
	method    jwt.SigningMethod
	signKey   any // nil: verify-only (only pub-key was given)
	verifyKey any
	ttl       time.Duration
	warn      func(msg string, args ...any)
}

// newJWTProvider builds the provider from the options of the
// --auth-token value. A sign-method, ttl or key file that cannot be used
// is ErrInvalidAuthOpts; key problems are ErrMissingKey, ErrKeyMismatch,
// or the key parser's error.
func newJWTProvider(opts map[string]string, warn func(msg string, args ...any)) (*jwtProvider, error) {
	ttl := defaultJWTTTL
	if v := opts[jwtOptTTL]; v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("%w: jwt %s: %w", ErrInvalidAuthOpts, jwtOptTTL, err)
		}
		ttl = d
	}
	var pubPEM, privPEM []byte
	if file := opts[jwtOptPublicKey]; file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("%w: jwt %s: %w", ErrInvalidAuthOpts, jwtOptPublicKey, err)
		}
		pubPEM = b
	}
	if file := opts[jwtOptPrivateKey]; file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("%w: jwt %s: %w", ErrInvalidAuthOpts, jwtOptPrivateKey, err)
		}
		privPEM = b
	}
	name := opts[jwtOptSignMethod]
	method := jwt.GetSigningMethod(name)
	if method == nil {
		return nil, fmt.Errorf("%w: jwt %s %q is unknown (%w)", ErrInvalidAuthOpts, jwtOptSignMethod, name, ErrInvalidAuthMethod)
	}

	var unknown []string
	for k := range opts {
		switch k {
		case jwtOptSignMethod, jwtOptPublicKey, jwtOptPrivateKey, jwtOptTTL:
		default:
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 && warn != nil {
		slices.Sort(unknown)
		warn("unknown JWT options", "keys", unknown)
	}

	p := &jwtProvider{method: method, ttl: ttl, warn: warn}
	var err error
	switch method.(type) {
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		err = p.loadKeys(privPEM, pubPEM, parseRSAPriv, parseRSAPub)
	case *jwt.SigningMethodECDSA:
		err = p.loadKeys(privPEM, pubPEM, parseECPriv, parseECPub)
	case *jwt.SigningMethodEd25519:
		err = p.loadKeys(privPEM, pubPEM, parseEdPriv, parseEdPub)
	case *jwt.SigningMethodHMAC:
		// The secret is the file's bytes as they are; pub-key is read
		// (it must exist) but not used.
		if len(privPEM) == 0 {
			return nil, fmt.Errorf("%w: sign-method %s needs the secret in %s", ErrMissingKey, name, jwtOptPrivateKey)
		}
		p.signKey, p.verifyKey = privPEM, privPEM
	default:
		return nil, fmt.Errorf("%w: sign-method %q cannot sign or verify tokens", ErrInvalidAuthMethod, name)
	}
	if err != nil {
		return nil, fmt.Errorf("%w (sign-method %s)", err, name)
	}
	return p, nil
}

// jwtPublicKey is the public half of a key pair, which can tell whether
// another key is the same.
type jwtPublicKey interface {
	Equal(x crypto.PublicKey) bool
}

// loadKeys parses the keys given: both must match; only pub-key makes
// the provider verify-only; neither is ErrMissingKey.
func (p *jwtProvider) loadKeys(privPEM, pubPEM []byte,
	parsePriv func([]byte) (priv any, pub jwtPublicKey, err error),
	parsePub func([]byte) (jwtPublicKey, error),
) error {
	var (
		priv    any
		privPub jwtPublicKey
		pub     jwtPublicKey
		err     error
	)
	if len(privPEM) > 0 {
		if priv, privPub, err = parsePriv(privPEM); err != nil {
			return fmt.Errorf("auth: jwt %s: %w", jwtOptPrivateKey, err)
		}
	}
	if len(pubPEM) > 0 {
		if pub, err = parsePub(pubPEM); err != nil {
			return fmt.Errorf("auth: jwt %s: %w", jwtOptPublicKey, err)
		}
	}
	switch {
	case priv == nil && pub == nil:
		return fmt.Errorf("%w: neither %s nor %s given", ErrMissingKey, jwtOptPrivateKey, jwtOptPublicKey)
	case priv == nil:
		p.verifyKey = pub
	case pub != nil && !pub.Equal(privPub):
		return ErrKeyMismatch
	default:
		p.signKey, p.verifyKey = priv, privPub
	}
	return nil
}

// The key parsers are jwt/v5's, which etcd uses: RSA and EC public keys
// may be PKIX or an X.509 certificate (RSA also PKCS1), private keys
// PKCS1/SEC1 or PKCS8; Ed25519 keys PKCS8 and PKIX.

func parseRSAPriv(b []byte) (any, jwtPublicKey, error) {
	k, err := jwt.ParseRSAPrivateKeyFromPEM(b)
	if err != nil {
		return nil, nil, err
	}
	return k, &k.PublicKey, nil
}

func parseRSAPub(b []byte) (jwtPublicKey, error) {
	k, err := jwt.ParseRSAPublicKeyFromPEM(b)
	if err != nil {
		return nil, err
	}
	return k, nil
}

func parseECPriv(b []byte) (any, jwtPublicKey, error) {
	k, err := jwt.ParseECPrivateKeyFromPEM(b)
	if err != nil {
		return nil, nil, err
	}
	return k, &k.PublicKey, nil
}

func parseECPub(b []byte) (jwtPublicKey, error) {
	k, err := jwt.ParseECPublicKeyFromPEM(b)
	if err != nil {
		return nil, err
	}
	return k, nil
}

func parseEdPriv(b []byte) (any, jwtPublicKey, error) {
	k, err := jwt.ParseEdPrivateKeyFromPEM(b)
	if err != nil {
		return nil, nil, err
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, nil, jwt.ErrNotEdPrivateKey
	}
	return priv, priv.Public().(ed25519.PublicKey), nil
}

func parseEdPub(b []byte) (jwtPublicKey, error) {
	k, err := jwt.ParseEdPublicKeyFromPEM(b)
	if err != nil {
		return nil, err
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, jwt.ErrNotEdPublicKey
	}
	return pub, nil
}

// Compile-time checks that the public halves compare as jwtPublicKey.
var (
	_ jwtPublicKey = (*rsa.PublicKey)(nil)
	_ jwtPublicKey = (*ecdsa.PublicKey)(nil)
	_ jwtPublicKey = ed25519.PublicKey(nil)
)

// GenPrefix is "": JWTs have no proposer-chosen part.
func (p *jwtProvider) GenPrefix() (string, error) { return "", nil }

// InvalidateUser does nothing: JWTs cannot be revoked.
func (p *jwtProvider) InvalidateUser(string) {}

// Enable does nothing: JWTs need no state.
func (p *jwtProvider) Enable() {}

// Disable does nothing: JWTs need no state.
func (p *jwtProvider) Disable() {}

// Assign signs {"exp": now+ttl (Unix seconds), "revision": revision,
// "username": username} with header {"alg": <sign-method>, "typ": "JWT"};
// prefix and index are not used. A verify-only provider returns
// ErrVerifyOnly.
func (p *jwtProvider) Assign(_ context.Context, username string, revision uint64, _ string, _ uint64) (string, error) {
	if p.signKey == nil {
		return "", ErrVerifyOnly
	}
	tk := jwt.NewWithClaims(p.method, jwt.MapClaims{
		"username": username,
		"revision": revision,
		"exp":      time.Now().Add(p.ttl).Unix(),
	})
	s, err := tk.SignedString(p.signKey)
	if err != nil {
		return "", fmt.Errorf("auth: signing a JWT (%s) for user %q: %w", p.method.Alg(), username, err)
	}
	return s, nil
}

// errJWTMethod is why a token whose alg is not the configured one fails.
var errJWTMethod = errors.New("signing method is not the configured one")

// Info verifies token as etcd: its alg must be the configured method, the
// signature must check, the registered time claims jwt/v5 checks by
// default must hold (exp and nbf when present), "username" must be a
// string and "revision" a number. The identity's revision is the claim;
// the revision argument is not used.
func (p *jwtProvider) Info(_ context.Context, token string, _ uint64) (*AuthInfo, bool) {
	parsed, err := jwt.Parse(token, func(t *jwt.Token) (any, error) {
		if t.Method.Alg() != p.method.Alg() {
			return nil, errJWTMethod
		}
		return p.verifyKey, nil
	})
	if err != nil {
		p.warnf("failed to parse a JWT token", "error", err)
		return nil, false
	}
	claims, ok := parsed.Claims.(jwt.MapClaims)
	if !ok || !parsed.Valid {
		p.warnf("failed to obtain claims from a JWT token")
		return nil, false
	}
	username, ok := claims["username"].(string)
	if !ok {
		p.warnf("failed to obtain user claims from jwt token")
		return nil, false
	}
	revision, ok := claims["revision"].(float64)
	if !ok {
		p.warnf("failed to obtain revision claims from jwt token")
		return nil, false
	}
	// A JSON number decodes to float64; etcd converts it the same way
	// (fractions truncate; out-of-range values are Go's conversion).
	return &AuthInfo{Username: username, Revision: uint64(revision)}, true
}

func (p *jwtProvider) warnf(msg string, args ...any) {
	if p.warn != nil {
		p.warn(msg, args...)
	}
}
