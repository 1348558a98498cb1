package interop

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
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	etcdauth "go.etcd.io/etcd/server/v3/auth"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc/metadata"

	"github.com/etckit/etckit/auth"
)

// etcd's token providers keep their methods unexported (info, assign), so
// the etcd side goes through what auth exports: an AuthStore over a bbolt
// backend, whose Authenticate assigns a token (the apply step, without the
// password check the API layer does) and whose AuthInfoFromCtx resolves
// the "token" metadata of a gRPC context.

// authTokEtcd is an etcd auth store with auth enabled and users root and
// alice, using the token provider of spec.
type authTokEtcd struct {
	as etcdauth.AuthStore
}

func newAuthTokEtcd(t *testing.T, spec string) *authTokEtcd {
	t.Helper()
	lg := zap.NewNop()
	tp, err := etcdauth.NewTokenProvider(lg, spec, authTokIndexWaiter, 0)
	if err != nil {
		t.Fatalf("etcd NewTokenProvider(%q): %v", spec, err)
	}
	be := backend.NewDefaultBackend(lg, filepath.Join(t.TempDir(), "db"))
	t.Cleanup(func() { be.Close() })
	as := etcdauth.NewAuthStore(lg, schema.NewAuthBackend(lg, be), tp, bcrypt.MinCost)
	t.Cleanup(func() { as.Close() })
	for _, u := range []string{"root", "alice"} {
		if _, err := as.UserAdd(&pb.AuthUserAddRequest{Name: u, Password: "pw"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := as.RoleAdd(&pb.AuthRoleAddRequest{Name: "root"}); err != nil {
		t.Fatal(err)
	}
	if _, err := as.UserGrantRole(&pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}); err != nil {
		t.Fatal(err)
	}
	if err := as.AuthEnable(); err != nil {
		t.Fatal(err)
	}
	return &authTokEtcd{as: as}
}

func authTokIndexWaiter(uint64) <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// mint is etcd applying an Authenticate for user with the proposer's
// prefix at index.
func (e *authTokEtcd) mint(user, prefix string, index uint64) (string, error) {
	ctx := context.WithValue(context.Background(), etcdauth.AuthenticateParamIndex{}, index)
	ctx = context.WithValue(ctx, etcdauth.AuthenticateParamSimpleTokenPrefix{}, prefix)
	resp, err := e.as.Authenticate(ctx, user, "pw")
	if err != nil {
		return "", err
	}
	return resp.Token, nil
}

// info is etcd resolving token as it arrives in a request's metadata.
func (e *authTokEtcd) info(token string) (*auth.AuthInfo, bool) {
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("token", token))
	ai, err := e.as.AuthInfoFromCtx(ctx)
	if err != nil || ai == nil {
		return nil, false
	}
	return &auth.AuthInfo{Username: ai.Username, Revision: ai.Revision}, true
}

func newAuthTokKit(t *testing.T, spec string) auth.TokenProvider {
	t.Helper()
	tp, err := auth.NewTokenProvider(spec, auth.TokenOptions{})
	if err != nil {
		t.Fatalf("etckit NewTokenProvider(%q): %v", spec, err)
	}
	tp.Enable()
	t.Cleanup(tp.Disable)
	return tp
}

// authTokKeys writes a fresh key pair of kind ("rsa", "ec", "ed",
// "hmac") to dir: priv, pub (PKIX) and, but for hmac and ed, cert.
func authTokKeys(t *testing.T, kind string) (priv, pub, cert string) {
	t.Helper()
	var (
		signer  any
		public  any
		privDER []byte
		pemType = "PRIVATE KEY"
		err     error
	)
	dir := t.TempDir()
	switch kind {
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		signer, public, privDER, pemType = k, &k.PublicKey, x509.MarshalPKCS1PrivateKey(k), "RSA PRIVATE KEY"
	case "ec":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		signer, public, pemType = k, &k.PublicKey, "EC PRIVATE KEY"
		if privDER, err = x509.MarshalECPrivateKey(k); err != nil {
			t.Fatal(err)
		}
	case "ed":
		pubk, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		signer, public = k, pubk
		if privDER, err = x509.MarshalPKCS8PrivateKey(k); err != nil {
			t.Fatal(err)
		}
	case "hmac":
		secret := make([]byte, 48)
		if _, err := rand.Read(secret); err != nil {
			t.Fatal(err)
		}
		priv = filepath.Join(dir, "secret")
		if err := os.WriteFile(priv, secret, 0o600); err != nil {
			t.Fatal(err)
		}
		return priv, "", ""
	default:
		t.Fatalf("key kind %q", kind)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(public)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	priv, pub = write("priv.pem", pemType, privDER), write("pub.pem", "PUBLIC KEY", pubDER)
	if kind != "ed" {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "interop"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
		}
		certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, public, signer)
		if err != nil {
			t.Fatal(err)
		}
		cert = write("cert.pem", "CERTIFICATE", certDER)
	}
	return priv, pub, cert
}

// authTokJSON decodes segment i of a JWT.
func authTokJSON(t *testing.T, tok string, i int) (raw []byte, m map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("JWT with %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return raw, m
}

func authTokKeysOf(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestAuthTokenJWTCrossAccept: with the same key files, each accepts the
// other's tokens with the same identity, and the tokens are built alike
// (same header bytes, same claim keys; byte-identical tokens for the
// deterministic signatures when minted in the same second).
func TestAuthTokenJWTCrossAccept(t *testing.T) {
	for _, c := range []struct {
		method, kind  string
		deterministic bool
		certAsPub     bool
	}{
		{"RS256", "rsa", true, false},
		{"RS256", "rsa", true, true}, // pub-key is an X.509 certificate
		{"PS256", "rsa", false, false},
		{"ES256", "ec", false, false},
		{"ES256", "ec", false, true},
		{"EdDSA", "ed", true, false},
		{"HS256", "hmac", true, false},
	} {
		name := c.method
		if c.certAsPub {
			name += "-cert"
		}
		t.Run(name, func(t *testing.T) {
			priv, pub, cert := authTokKeys(t, c.kind)
			if c.certAsPub {
				pub = cert
			}
			spec := "jwt,sign-method=" + c.method + ",priv-key=" + priv + ",ttl=10m"
			if pub != "" {
				spec += ",pub-key=" + pub
			}
			etcd, kit := newAuthTokEtcd(t, spec), newAuthTokKit(t, spec)
			rev := etcd.as.Revision()

			var etcdTok, kitTok string
			for attempt := 0; ; attempt++ {
				var err error
				if etcdTok, err = etcd.mint("alice", "", 9); err != nil {
					t.Fatalf("etcd Authenticate: %v", err)
				}
				if kitTok, err = kit.Assign(context.Background(), "alice", rev, "", 9); err != nil {
					t.Fatalf("etckit Assign: %v", err)
				}
				_, e1 := authTokJSON(t, etcdTok, 1)
				_, e2 := authTokJSON(t, kitTok, 1)
				if e1["exp"] == e2["exp"] || attempt == 3 {
					break // else a second boundary fell between them
				}
			}
			want := auth.AuthInfo{Username: "alice", Revision: rev}
			if ai, ok := kit.Info(context.Background(), etcdTok, 0); !ok || *ai != want {
				t.Errorf("etckit resolves etcd's token to %+v, %v; want %+v", ai, ok, want)
			}
			if ai, ok := etcd.info(kitTok); !ok || *ai != want {
				t.Errorf("etcd resolves etckit's token to %+v, %v; want %+v", ai, ok, want)
			}
			// A revision etcd's store never had: the claim is what counts.
			tok42, err := kit.Assign(context.Background(), "root", 42, "", 0)
			if err != nil {
				t.Fatal(err)
			}
			if ai, ok := etcd.info(tok42); !ok || *ai != (auth.AuthInfo{Username: "root", Revision: 42}) {
				t.Errorf("etcd resolves etckit's root@42 token to %+v, %v", ai, ok)
			}

			h1, m1 := authTokJSON(t, etcdTok, 1)
			h2, m2 := authTokJSON(t, kitTok, 1)
			if k1, k2 := authTokKeysOf(m1), authTokKeysOf(m2); !slices.Equal(k1, k2) {
				t.Errorf("claim keys: etcd %v, etckit %v", k1, k2)
			}
			if m1["exp"] == m2["exp"] && string(h1) != string(h2) {
				t.Errorf("payloads in the same second: etcd %s, etckit %s", h1, h2)
			}
			hd1, _ := authTokJSON(t, etcdTok, 0)
			hd2, _ := authTokJSON(t, kitTok, 0)
			if string(hd1) != string(hd2) {
				t.Errorf("headers: etcd %s, etckit %s", hd1, hd2)
			}
			if c.deterministic && m1["exp"] == m2["exp"] && etcdTok != kitTok {
				t.Errorf("%s tokens of the same second differ:\netcd   %s\netckit %s", c.method, etcdTok, kitTok)
			}
			t.Logf("etcd header %s payload %s", hd1, h1)

			// Tampered: both refuse.
			parts := strings.Split(kitTok, ".")
			forged := base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(h2), `"alice"`, `"root"`, 1)))
			bad := parts[0] + "." + forged + "." + parts[2]
			if _, ok := etcd.info(bad); ok {
				t.Errorf("etcd accepts a forged payload")
			}
			if _, ok := kit.Info(context.Background(), bad, 0); ok {
				t.Errorf("etckit accepts a forged payload")
			}

			if pub == "" {
				return
			}
			// Verify-only on both sides: Authenticate refused alike, and
			// the other's full-key tokens accepted.
			vspec := "jwt,sign-method=" + c.method + ",pub-key=" + pub
			vetcd, vkit := newAuthTokEtcd(t, vspec), newAuthTokKit(t, vspec)
			_, errEtcd := vetcd.mint("alice", "", 1)
			_, errKit := vkit.Assign(context.Background(), "alice", 1, "", 1)
			if errEtcd == nil || !errors.Is(errKit, auth.ErrVerifyOnly) || errEtcd.Error() != auth.ErrVerifyOnly.Error() {
				t.Errorf("verify-only Authenticate: etcd %v, etckit %v", errEtcd, errKit)
			}
			if ai, ok := vetcd.info(kitTok); !ok || *ai != want {
				t.Errorf("etcd verify-only resolves etckit's token to %+v, %v", ai, ok)
			}
			if ai, ok := vkit.Info(context.Background(), etcdTok, 0); !ok || *ai != want {
				t.Errorf("etckit verify-only resolves etcd's token to %+v, %v", ai, ok)
			}
		})
	}
}

// TestAuthTokenJWTClaimsDiff signs odd claim sets and headers with the
// shared keys and checks that etcd and etckit accept and refuse the same
// ones, with the same identity.
func TestAuthTokenJWTClaimsDiff(t *testing.T) {
	priv, pub, _ := authTokKeys(t, "rsa")
	hpriv, _, _ := authTokKeys(t, "hmac")
	secret, err := os.ReadFile(hpriv)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	privPEM, err := os.ReadFile(priv)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := jwt.ParseRSAPrivateKeyFromPEM(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	future, past := time.Now().Add(time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
	good := func() jwt.MapClaims { return jwt.MapClaims{"username": "u", "revision": 3, "exp": future} }
	with := func(k string, v any) jwt.MapClaims {
		m := good()
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	type signed struct {
		name   string
		method jwt.SigningMethod
		key    any
		claims jwt.MapClaims
	}
	cases := []signed{
		{"good", jwt.SigningMethodHS256, secret, good()},
		{"no username", jwt.SigningMethodHS256, secret, with("username", nil)},
		{"numeric username", jwt.SigningMethodHS256, secret, with("username", 7)},
		{"no revision", jwt.SigningMethodHS256, secret, with("revision", nil)},
		{"string revision", jwt.SigningMethodHS256, secret, with("revision", "3")},
		{"fractional revision", jwt.SigningMethodHS256, secret, with("revision", 3.99)},
		{"huge revision", jwt.SigningMethodHS256, secret, with("revision", 1e19)},
		{"negative revision", jwt.SigningMethodHS256, secret, with("revision", -1)},
		{"no exp", jwt.SigningMethodHS256, secret, with("exp", nil)},
		{"past exp", jwt.SigningMethodHS256, secret, with("exp", past)},
		{"string exp", jwt.SigningMethodHS256, secret, with("exp", "x")},
		{"future nbf", jwt.SigningMethodHS256, secret, with("nbf", future)},
		{"future iat", jwt.SigningMethodHS256, secret, with("iat", future)},
		{"HS512 with the secret", jwt.SigningMethodHS512, secret, good()},
		{"HS256 with another secret", jwt.SigningMethodHS256, []byte("other"), good()},
		{"none", jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good()},
	}
	rsaCases := []signed{
		{"RS256 good", jwt.SigningMethodRS256, rsaKey, good()},
		{"RS512 same key", jwt.SigningMethodRS512, rsaKey, good()},
		{"PS256 same key", jwt.SigningMethodPS256, rsaKey, good()},
		{"HS256 keyed with the RSA public key", jwt.SigningMethodHS256, pubPEM, good()},
		{"HS256 keyed with the RSA private key", jwt.SigningMethodHS256, privPEM, good()},
	}
	run := func(spec string, cases []signed) {
		etcd, kit := newAuthTokEtcd(t, spec), newAuthTokKit(t, spec)
		for _, c := range cases {
			tok, err := jwt.NewWithClaims(c.method, c.claims).SignedString(c.key)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			ae, oke := etcd.info(tok)
			ak, okk := kit.Info(context.Background(), tok, 0)
			if oke != okk || (oke && *ae != *ak) {
				t.Errorf("%s: etcd %+v %v, etckit %+v %v", c.name, ae, oke, ak, okk)
			}
			t.Logf("%-40s accepted %v %+v", c.name, oke, ae)
		}
		for _, tok := range []string{"", ".", "a.b.c", "e30.e30.", "e30.e30.e30"} {
			_, oke := etcd.info(tok)
			_, okk := kit.Info(context.Background(), tok, 0)
			if oke != okk {
				t.Errorf("%q: etcd %v, etckit %v", tok, oke, okk)
			}
		}
	}
	run("jwt,sign-method=HS256,priv-key="+hpriv, cases)
	run("jwt,sign-method=RS256,pub-key="+pub, rsaCases)
}

// TestAuthTokenOptsDiff: the --auth-token values etcd refuses, etckit
// refuses, with the same error where etcd's is one of its sentinels.
func TestAuthTokenOptsDiff(t *testing.T) {
	rsaPriv, rsaPub, rsaCert := authTokKeys(t, "rsa")
	_, rsaPub2, _ := authTokKeys(t, "rsa")
	ecPriv, ecPub, _ := authTokKeys(t, "ec")
	edPriv, edPub, _ := authTokKeys(t, "ed")
	hmac, _, _ := authTokKeys(t, "hmac")
	dir := t.TempDir()
	garbage, empty := filepath.Join(dir, "garbage"), filepath.Join(dir, "empty")
	if err := os.WriteFile(garbage, []byte("-----BEGIN NOTHING-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	specs := []string{
		"simple", "simple,x=y", "simple,x", "simple,", "", ",", "=", "SIMPLE", "jwtx", "simple,a=1,a=2", "simple,a=b=c",
		"jwt",
		"jwt,sign-method=RS256",
		"jwt,sign-method=RS256,priv-key=" + rsaPriv,
		"jwt,sign-method=RS256,pub-key=" + rsaPub,
		"jwt,sign-method=RS256,pub-key=" + rsaCert + ",priv-key=" + rsaPriv,
		"jwt,sign-method=RS256,pub-key=" + rsaPub2 + ",priv-key=" + rsaPriv,
		"jwt,sign-method=PS512,pub-key=" + rsaPub + ",priv-key=" + rsaPriv + ",ttl=1h",
		"jwt,sign-method=RS256,priv-key=" + rsaPriv + ",ttl=abc",
		"jwt,sign-method=RS256,priv-key=" + rsaPriv + ",ttl=-5s",
		"jwt,sign-method=RS256,priv-key=" + rsaPriv + ",colour=blue",
		"jwt,sign-method=RS256,priv-key=" + missing,
		"jwt,sign-method=RS256,priv-key=" + garbage,
		"jwt,sign-method=RS256,priv-key=" + empty,
		"jwt,sign-method=RS256,priv-key=" + ecPriv,
		"jwt,sign-method=rs256,priv-key=" + rsaPriv,
		"jwt,sign-method=none,priv-key=" + rsaPriv,
		"jwt,sign-method=ES256,priv-key=" + ecPriv + ",pub-key=" + ecPub,
		"jwt,sign-method=ES384,priv-key=" + ecPriv, // P-256 key for ES384: loads, signing fails
		"jwt,sign-method=ES256,pub-key=" + rsaPub,
		"jwt,sign-method=EdDSA,priv-key=" + edPriv + ",pub-key=" + edPub,
		"jwt,sign-method=EdDSA,pub-key=" + rsaCert,
		"jwt,sign-method=EdDSA,priv-key=" + ecPriv,
		"jwt,sign-method=HS256,priv-key=" + hmac,
		"jwt,sign-method=HS256,pub-key=" + rsaPub,
		"jwt,sign-method=HS256,priv-key=" + hmac + ",pub-key=" + missing,
		"jwt,sign-method=HS256,priv-key=" + empty,
		"jwt,sign-method=HS256,priv-key=" + hmac + ",priv-key=" + hmac,
	}
	// etckit's sentinel with etcd's text, for etcd's sentinel errors.
	kitSentinel := map[string]error{}
	for _, e := range []error{auth.ErrInvalidAuthOpts, auth.ErrInvalidAuthMethod, auth.ErrMissingKey, auth.ErrKeyMismatch} {
		kitSentinel[e.Error()] = e
	}
	refused := 0
	for _, spec := range specs {
		name := strings.ReplaceAll(spec, dir, "$D")
		for _, p := range []string{rsaPriv, rsaPub, rsaCert, rsaPub2, ecPriv, ecPub, edPriv, edPub, hmac} {
			name = strings.ReplaceAll(name, p, filepath.Base(filepath.Dir(p))+"/"+filepath.Base(p))
		}
		_, errEtcd := etcdauth.NewTokenProvider(zap.NewNop(), spec, authTokIndexWaiter, 0)
		tp, errKit := auth.NewTokenProvider(spec, auth.TokenOptions{})
		if tp != nil {
			tp.Disable()
		}
		t.Logf("%-60s etcd: %v | etckit: %v", name, errEtcd, errKit)
		switch {
		case (errEtcd == nil) != (errKit == nil):
			t.Errorf("%s: etcd %v, etckit %v", name, errEtcd, errKit)
		case errEtcd == nil:
		default:
			refused++
			if s, ok := kitSentinel[errEtcd.Error()]; ok {
				if !errors.Is(errKit, s) {
					t.Errorf("%s: etcd %v, etckit %v is not that", name, errEtcd, errKit)
				}
			} else if !errors.Is(errKit, errEtcd) && !strings.Contains(errKit.Error(), errEtcd.Error()) &&
				!strings.HasPrefix(errEtcd.Error(), "unsupported signing method") {
				// A key parser's error: jwt/v5's sentinels are the same
				// values on both sides, x509's text is the same.
				t.Errorf("%s: etcd %v, etckit %v does not carry it", name, errEtcd, errKit)
			}
		}
	}
	if refused < 10 {
		t.Errorf("only %d specs refused; the table lost its bad cases", refused)
	}
}

// TestAuthTokenSimpleDiff: the same proposer prefix and index make the
// same simple token on both; lookalikes are refused by both; the nop
// provider ("") fails Authenticate with the same error.
func TestAuthTokenSimpleDiff(t *testing.T) {
	etcd, kit := newAuthTokEtcd(t, "simple"), newAuthTokKit(t, "simple")
	prefix, err := etcd.as.GenTokenPrefix()
	if err != nil {
		t.Fatal(err)
	}
	kitPrefix, err := kit.GenPrefix()
	if err != nil {
		t.Fatal(err)
	}
	if len(prefix) != len(kitPrefix) || strings.Trim(kitPrefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		t.Fatalf("prefixes: etcd %q, etckit %q", prefix, kitPrefix)
	}
	const index = 1234
	etcdTok, err := etcd.mint("alice", prefix, index)
	if err != nil {
		t.Fatal(err)
	}
	kitTok, err := kit.Assign(context.Background(), "alice", 1, prefix, index)
	if err != nil {
		t.Fatal(err)
	}
	if etcdTok != kitTok {
		t.Fatalf("tokens: etcd %q, etckit %q", etcdTok, kitTok)
	}
	rev := etcd.as.Revision()
	for _, tok := range []string{
		etcdTok, prefix, prefix + ".", prefix + ".01234", prefix + ".+1234", prefix + ".1234.", "." + fmt.Sprint(index),
		prefix + ".1235", strings.ToLower(prefix) + ".1234", prefix + ".1234 ", "",
	} {
		ae, oke := etcd.info(tok)
		ak, okk := kit.Info(context.Background(), tok, rev)
		if oke != okk || (oke && *ae != *ak) {
			t.Errorf("%q: etcd %+v %v, etckit %+v %v", tok, ae, oke, ak, okk)
		}
	}

	nopEtcd, nopKit := newAuthTokEtcd(t, ""), newAuthTokKit(t, "")
	_, errEtcd := nopEtcd.mint("alice", "", 1)
	_, errKit := nopKit.Assign(context.Background(), "alice", 1, "", 1)
	if errEtcd == nil || errKit == nil || errEtcd.Error() != errKit.Error() || !errors.Is(errKit, auth.ErrAuthFailed) {
		t.Errorf("nop Authenticate: etcd %v, etckit %v", errEtcd, errKit)
	}
}
