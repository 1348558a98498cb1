package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// TLSInfo is one side's TLS settings, the client side (--cert-file and
// the flags after it) or the peer side (--peer-cert-file and the flags
// after it), as etcd's transport.TLSInfo. The zero value is plaintext.
type TLSInfo struct {
	// CertFile and KeyFile are the server certificate, also presented as
	// the client certificate when this member dials (peers, or the
	// client side's own gateway) unless ClientCertFile and ClientKeyFile
	// are set. All four are read from disk on every handshake.
	CertFile, KeyFile             string
	ClientCertFile, ClientKeyFile string
	// TrustedCAFile verifies the certificates clients present, and the
	// peers' server certificates when dialling. Setting it alone already
	// makes client certificates mandatory, as ClientCertAuth does.
	TrustedCAFile  string
	ClientCertAuth bool
	// CRLFile is a DER revocation list (as etcd: not PEM), read for
	// every connection: a connection presenting a listed serial is refused.
	CRLFile string
	// AllowedCNs and AllowedHostnames (mutually exclusive) restrict the
	// verified client leaf by Subject CN or by a hostname it must match.
	AllowedCNs       []string
	AllowedHostnames []string
	// SkipClientSANVerify turns off the peer listener's check of a client
	// certificate's SANs against the connection's source address.
	SkipClientSANVerify bool

	// AutoTLS is --auto-tls / --peer-auto-tls: without CertFile and
	// KeyFile, a self-signed certificate is made (or reused) in
	// <data-dir>/fixtures/{client,peer}, valid SelfSignedCertValidity
	// years (default 1). As in etcd it replaces every other setting of the
	// side but the cipher suites and versions, and dialers skip
	// verification.
	AutoTLS                bool
	SelfSignedCertValidity uint

	// CipherSuites (empty: Go's), MinVersion (0: TLS 1.2) and MaxVersion
	// (0: Go's highest). etcd's --cipher-suites, --tls-min-version and
	// --tls-max-version set both sides alike.
	CipherSuites           []uint16
	MinVersion, MaxVersion uint16

	selfCert bool
	fl       *tlsFlags // flag names for errors; nil: client side
}

// String is etcd's TLSInfo.String, for the "starting with ... TLS" logs.
func (i *TLSInfo) String() string {
	return fmt.Sprintf("cert = %s, key = %s, client-cert=%s, client-key=%s, trusted-ca = %s, client-cert-auth = %v, crl-file = %s",
		i.CertFile, i.KeyFile, i.ClientCertFile, i.ClientKeyFile, i.TrustedCAFile, i.ClientCertAuth, i.CRLFile)
}

// cipherSuiteNames are the configured suites' names, for logs.
func (i *TLSInfo) cipherSuiteNames() []string {
	out := make([]string, 0, len(i.CipherSuites))
	for _, id := range i.CipherSuites {
		out = append(out, tls.CipherSuiteName(id))
	}
	return out
}

// Empty reports whether no certificate is configured (etcd's Empty).
func (i *TLSInfo) Empty() bool { return i.CertFile == "" && i.KeyFile == "" }

// tlsFlags are the flag names of one side, for errors and logs.
type tlsFlags struct {
	side                                string // "client" or "peer"
	cert, key, clientCert, clientKey    string
	ca, crl, autoTLS, allowedCN, allowH string
}

var (
	clientTLSFlags = tlsFlags{side: "client", cert: "--cert-file", key: "--key-file", clientCert: "--client-cert-file",
		clientKey: "--client-key-file", ca: "--trusted-ca-file", crl: "--client-crl-file", autoTLS: "--auto-tls",
		allowedCN: "allowed CNs", allowH: "--client-cert-allowed-hostname"}
	peerTLSFlags = tlsFlags{side: "peer", cert: "--peer-cert-file", key: "--peer-key-file", clientCert: "--peer-client-cert-file",
		clientKey: "--peer-client-key-file", ca: "--peer-trusted-ca-file", crl: "--peer-crl-file", autoTLS: "--peer-auto-tls",
		allowedCN: "--peer-cert-allowed-cn", allowH: "--peer-cert-allowed-hostname"}
)

func (i *TLSInfo) flags() *tlsFlags {
	if i.fl == nil {
		return &clientTLSFlags
	}
	return i.fl
}

// tlsHandshakeTimeout bounds a TLS handshake, on listeners and dialers
// alike (etcd's).
const tlsHandshakeTimeout = 10 * time.Second

// TLS versions as etcd's flags name them.
const (
	TLSVersion12 = "TLS1.2"
	TLSVersion13 = "TLS1.3"
)

// ParseTLSVersion maps --tls-min-version / --tls-max-version to a
// crypto/tls version: "" is 0 (Go decides), TLS1.2 or TLS1.3.
func ParseTLSVersion(v string) (uint16, error) {
	switch v {
	case "":
		return 0, nil
	case TLSVersion12:
		return tls.VersionTLS12, nil
	case TLSVersion13:
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("unexpected TLS version %q (must be one of: TLS1.2, TLS1.3)", v)
}

func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return TLSVersion12
	case tls.VersionTLS13:
		return TLSVersion13
	case 0:
		return ""
	}
	return fmt.Sprintf("0x%04x", v)
}

// ParseCipherSuites maps --cipher-suites names to IDs: Go's secure and
// insecure suites by name, and etcd's two CHACHA20 aliases.
func ParseCipherSuites(names []string) ([]uint16, error) {
	out := make([]uint16, 0, len(names))
	for _, n := range names {
		id, ok := cipherSuite(n)
		if !ok {
			return nil, fmt.Errorf("unexpected TLS cipher suite %q", n)
		}
		out = append(out, id)
	}
	return out, nil
}

func cipherSuite(name string) (uint16, bool) {
	for _, c := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if c.Name == name {
			return c.ID, true
		}
	}
	switch name {
	case "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305":
		return tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, true
	case "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305":
		return tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, true
	}
	return 0, false
}

// validateVersions is etcd's Config.Validate for the shared TLS settings.
func (i *TLSInfo) validateVersions() error {
	for _, v := range []uint16{i.MinVersion, i.MaxVersion} {
		if v != 0 && v != tls.VersionTLS12 && v != tls.VersionTLS13 {
			return fmt.Errorf("unexpected TLS version %q (must be one of: TLS1.2, TLS1.3)", tlsVersionName(v))
		}
	}
	if i.MaxVersion != 0 && i.MinVersion > i.MaxVersion {
		return fmt.Errorf("min version (%s) is greater than max version (%s)", tlsVersionName(i.MinVersion), tlsVersionName(i.MaxVersion))
	}
	if i.MinVersion == tls.VersionTLS13 && len(i.CipherSuites) > 0 {
		return errors.New("cipher suites cannot be configured when only TLS1.3 is enabled")
	}
	return nil
}

// selfCert is etcd's ClientSelfCert / PeerSelfCert: unless a certificate
// is given, make one in dir for hosts (host:port) and use it alone.
func (i *TLSInfo) selfCertIn(log *slog.Logger, dir string, hosts []string) error {
	if !i.AutoTLS {
		return nil
	}
	fl := i.flags()
	if !i.Empty() {
		log.Warn("ignoring " + fl.side + " auto TLS since certs given")
		return nil
	}
	validity := i.SelfSignedCertValidity
	if validity == 0 {
		validity = 1
	}
	certPath, keyPath, err := selfCert(log, dir, hosts, validity)
	if err != nil {
		return fmt.Errorf("failed to get %s self-signed certs (%s, in %s): %w", fl.side, fl.autoTLS, dir, err)
	}
	*i = TLSInfo{CertFile: certPath, KeyFile: keyPath, ClientCertFile: certPath, ClientKeyFile: keyPath,
		CipherSuites: i.CipherSuites, MinVersion: i.MinVersion, MaxVersion: i.MaxVersion, selfCert: true, fl: i.fl}
	return nil
}

// selfCert writes (or reuses) dir/cert.pem and dir/key.pem: a
// self-signed ECDSA P-521 CA certificate for hosts, as etcd's SelfCert.
func selfCert(log *slog.Logger, dir string, hosts []string, years uint) (certPath, keyPath string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	if certPath, err = filepath.Abs(filepath.Join(dir, "cert.pem")); err != nil {
		return "", "", err
	}
	if keyPath, err = filepath.Abs(filepath.Join(dir, "key.pem")); err != nil {
		return "", "", err
	}
	_, errc := os.Stat(certPath)
	_, errk := os.Stat(keyPath)
	if errc == nil && errk == nil {
		return certPath, keyPath, nil
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return "", "", err
	}
	tmpl := x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"etcd"}},
		NotBefore:             time.Now(),
		NotAfter:              time.Now().Add(time.Duration(years) * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	log.Warn("automatically generate certificates", "certificate-validity-bound-not-after", tmpl.NotAfter)
	for _, h := range hosts {
		host, _, err := net.SplitHostPort(h)
		if err != nil {
			host = h
		}
		if ip := net.ParseIP(host); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if host != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, host)
		}
	}
	priv, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &priv.PublicKey, priv)
	if err != nil {
		return "", "", err
	}
	kb, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	log.Info("created cert file", "path", certPath)
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return "", "", err
	}
	log.Info("created key file", "path", keyPath)
	return certPath, keyPath, nil
}

// loadKeyPair reads a certificate and its key, naming the flags in errors.
func loadKeyPair(certFlag, certFile, keyFlag, keyFile string) (*tls.Certificate, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFlag, err)
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFlag, err)
	}
	c, err := tls.X509KeyPair(cb, kb)
	if err != nil {
		return nil, fmt.Errorf("%s %s, %s %s: %w", certFlag, certFile, keyFlag, keyFile, err)
	}
	return &c, nil
}

// certPool reads every PEM certificate of file.
func certPool(flag, file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	pool := x509.NewCertPool()
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", flag, file, err)
		}
		pool.AddCert(c)
	}
	return pool, nil
}

// baseConfig is etcd's TLSInfo.baseConfig: versions, cipher suites, the
// allowed CN / hostname check, and certificates read on every handshake
// (so a renewed file is used from the next connection on).
func (i *TLSInfo) baseConfig(log *slog.Logger) (*tls.Config, error) {
	fl := i.flags()
	if i.KeyFile == "" || i.CertFile == "" {
		return nil, fmt.Errorf("KeyFile and CertFile must both be present[key: %v, cert: %v] (%s, %s)", i.KeyFile, i.CertFile, fl.key, fl.cert)
	}
	if _, err := loadKeyPair(fl.cert, i.CertFile, fl.key, i.KeyFile); err != nil {
		return nil, err
	}
	if (i.ClientKeyFile == "") != (i.ClientCertFile == "") {
		return nil, fmt.Errorf("ClientKeyFile and ClientCertFile must both be present or both absent: key: %v, cert: %v] (%s, %s)", i.ClientKeyFile, i.ClientCertFile, fl.clientKey, fl.clientCert)
	}
	if i.ClientCertFile != "" {
		if _, err := loadKeyPair(fl.clientCert, i.ClientCertFile, fl.clientKey, i.ClientKeyFile); err != nil {
			return nil, err
		}
	}
	minV := i.MinVersion
	if minV == 0 {
		minV = tls.VersionTLS12
	}
	cfg := &tls.Config{MinVersion: minV, MaxVersion: i.MaxVersion}
	if len(i.CipherSuites) > 0 {
		cfg.CipherSuites = slices.Clone(i.CipherSuites)
	}
	if len(i.AllowedCNs) > 0 && len(i.AllowedHostnames) > 0 {
		return nil, fmt.Errorf("AllowedCNs and AllowedHostnames are mutually exclusive (cns=%q, hostnames=%q)", i.AllowedCNs, i.AllowedHostnames)
	}
	var allowed func(*x509.Certificate) bool
	if cns := slices.Clone(i.AllowedCNs); len(cns) > 0 {
		allowed = func(c *x509.Certificate) bool { return slices.Contains(cns, c.Subject.CommonName) }
	}
	if hosts := slices.Clone(i.AllowedHostnames); len(hosts) > 0 {
		allowed = func(c *x509.Certificate) bool {
			for _, h := range hosts {
				if c.VerifyHostname(h) == nil {
					return true
				}
			}
			return false
		}
	}
	if allowed != nil {
		cfg.VerifyPeerCertificate = func(_ [][]byte, chains [][]*x509.Certificate) error {
			for _, ch := range chains {
				if len(ch) != 0 && allowed(ch[0]) {
					return nil
				}
			}
			return errors.New("client certificate authentication failed")
		}
	}
	certFile, keyFile := i.CertFile, i.KeyFile
	cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		c, err := loadKeyPair(fl.cert, certFile, fl.key, keyFile)
		if err != nil {
			log.Warn("failed to create "+fl.side+" server certificate", "cert-file", certFile, "key-file", keyFile, "error", err)
		}
		return c, err
	}
	ccFlag, ccFile, ckFlag, ckFile := fl.cert, i.CertFile, fl.key, i.KeyFile
	if i.ClientCertFile != "" {
		ccFlag, ccFile, ckFlag, ckFile = fl.clientCert, i.ClientCertFile, fl.clientKey, i.ClientKeyFile
	}
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c, err := loadKeyPair(ccFlag, ccFile, ckFlag, ckFile)
		if err != nil {
			log.Warn("failed to create "+fl.side+" client certificate", "cert-file", ccFile, "key-file", ckFile, "error", err)
		}
		return c, err
	}
	return cfg, nil
}

// serverConfig is etcd's TLSInfo.ServerConfig: client certificates are
// required and verified when TrustedCAFile or ClientCertAuth is set (the
// system roots verify them when only ClientCertAuth is), and ALPN offers h2.
func (i *TLSInfo) serverConfig(log *slog.Logger) (*tls.Config, error) {
	cfg, err := i.baseConfig(log)
	if err != nil {
		return nil, err
	}
	cfg.ClientAuth = tls.NoClientCert
	if i.TrustedCAFile != "" || i.ClientCertAuth {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if i.TrustedCAFile != "" {
		if cfg.ClientCAs, err = certPool(i.flags().ca, i.TrustedCAFile); err != nil {
			return nil, err
		}
	}
	cfg.NextProtos = []string{"h2"}
	return cfg, nil
}

// clientConfig is etcd's TLSInfo.ClientConfig, for dialling: the
// certificate to present (when one is configured), TrustedCAFile as the
// roots (the system's otherwise), no verification with auto TLS. It
// offers no ALPN protocol, so dialers speak HTTP/1.1.
func (i *TLSInfo) clientConfig(log *slog.Logger) (*tls.Config, error) {
	cfg := &tls.Config{}
	if !i.Empty() {
		var err error
		if cfg, err = i.baseConfig(log); err != nil {
			return nil, err
		}
	}
	if i.TrustedCAFile != "" {
		pool, err := certPool(i.flags().ca, i.TrustedCAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if i.selfCert {
		cfg.InsecureSkipVerify = true
	}
	return cfg, nil
}

// connCheck runs on a connection after its handshake; an error refuses it.
type connCheck func(ctx context.Context, c *tls.Conn) error

// crlCheck refuses a connection that presented a certificate whose
// serial is revoked in the CRL at path, read anew for each connection.
func crlCheck(flag, path string) connCheck {
	return func(_ context.Context, c *tls.Conn) error {
		if certs := c.ConnectionState().PeerCertificates; len(certs) > 0 {
			return checkCRL(flag, path, certs)
		}
		return nil
	}
}

// checkCRL is etcd's: any of certs with a serial the list revokes fails
// with "transport: certificate serial <hex> revoked".
func checkCRL(flag, path string, certs []*x509.Certificate) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	// DER only, as etcd: a PEM list fails to parse, and then every
	// connection presenting a certificate is refused.
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, path, err)
	}
	revoked := make(map[string]struct{}, len(crl.RevokedCertificateEntries))
	for _, rc := range crl.RevokedCertificateEntries {
		revoked[string(rc.SerialNumber.Bytes())] = struct{}{}
	}
	for _, c := range certs {
		serial := string(c.SerialNumber.Bytes())
		if _, ok := revoked[serial]; ok {
			return fmt.Errorf("transport: certificate serial %x revoked", serial)
		}
	}
	return nil
}

// sanCheck is etcd's checkSAN on peer (and https metrics) listeners: a
// client leaf with SANs must name the connection's source address, by IP
// SAN or by a DNS SAN resolving to it (either way round).
func sanCheck(ctx context.Context, c *tls.Conn) error {
	certs := c.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil
	}
	cert := certs[0]
	if len(cert.IPAddresses) == 0 && len(cert.DNSNames) == 0 {
		return nil
	}
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return err
	}
	if len(cert.IPAddresses) > 0 {
		verr := cert.VerifyHostname(host)
		if verr == nil {
			return nil
		}
		if len(cert.DNSNames) == 0 {
			return verr
		}
	}
	ok, lerr := hostInDNS(ctx, host, cert.DNSNames)
	if ok {
		return nil
	}
	suffix := ""
	if lerr != nil {
		suffix = " (" + lerr.Error() + ")"
	}
	return fmt.Errorf("tls: %q does not match any of DNSNames %q"+suffix, host, cert.DNSNames)
}

func hostInDNS(ctx context.Context, host string, dnsNames []string) (bool, error) {
	var names, wildcards []string
	for _, d := range dnsNames {
		if strings.HasPrefix(d, "*.") {
			wildcards = append(wildcards, d[1:])
		} else {
			names = append(names, d)
		}
	}
	lnames, err := net.DefaultResolver.LookupAddr(ctx, host)
	for _, n := range lnames {
		n = strings.TrimSuffix(n, ".")
		for _, wc := range wildcards {
			if strings.HasSuffix(n, wc) {
				return true, nil
			}
		}
		if slices.Contains(names, n) {
			return true, nil
		}
	}
	for _, d := range names {
		addrs, lerr := net.DefaultResolver.LookupHost(ctx, d)
		if lerr != nil {
			err = lerr
			continue
		}
		if slices.Contains(addrs, host) {
			return true, nil
		}
	}
	return false, err
}

// tlsListener is etcd's TLS listener: every accepted connection does its
// handshake in its own goroutine within tlsHandshakeTimeout, then runs
// the checks (SAN, CRL); only connections that pass reach Accept.
// Failures are logged as etcd does ("rejected connection on client
// endpoint", EOF at debug level).
type tlsListener struct {
	net.Listener
	cfg    *tls.Config
	checks []connCheck
	// wrap hides the *tls.Conn from the server (the peer listener: etcd
	// serves it through cmux, so net/http sees no TLS and speaks HTTP/1).
	wrap   bool
	log    *slog.Logger
	msg    string
	connc  chan net.Conn
	donec  chan struct{}
	errMu  sync.Mutex
	err    error
	closed sync.Once
}

func newTLSListener(l net.Listener, cfg *tls.Config, log *slog.Logger, msg string, wrap bool, checks ...connCheck) *tlsListener {
	tl := &tlsListener{Listener: l, cfg: cfg, checks: checks, wrap: wrap, log: log, msg: msg,
		connc: make(chan net.Conn), donec: make(chan struct{})}
	go tl.acceptLoop()
	return tl
}

func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.connc:
		return c, nil
	case <-l.donec:
		l.errMu.Lock()
		defer l.errMu.Unlock()
		return nil, l.err
	}
}

func (l *tlsListener) Close() error {
	err := l.Listener.Close()
	<-l.donec
	return err
}

func (l *tlsListener) acceptLoop() {
	var wg sync.WaitGroup
	var mu sync.Mutex
	pending := map[net.Conn]struct{}{}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		cancel()
		mu.Lock()
		for c := range pending {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
		close(l.donec)
	}()
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			l.errMu.Lock()
			l.err = err
			l.errMu.Unlock()
			return
		}
		tc := tls.Server(raw, l.cfg)
		mu.Lock()
		pending[tc] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = tc.SetDeadline(time.Now().Add(tlsHandshakeTimeout))
			herr := tc.HandshakeContext(ctx)
			mu.Lock()
			delete(pending, tc)
			mu.Unlock()
			if herr != nil {
				l.rejected(tc, herr)
				_ = tc.Close()
				return
			}
			_ = tc.SetDeadline(time.Time{})
			for _, check := range l.checks {
				if err := check(ctx, tc); err != nil {
					l.rejected(tc, err)
					_ = tc.Close()
					return
				}
			}
			var c net.Conn = tc
			if l.wrap {
				c = &hiddenTLSConn{tc}
			}
			select {
			case l.connc <- c:
			case <-ctx.Done():
				_ = tc.Close()
			}
		}()
	}
}

// rejected logs a refused connection with etcd's fields.
func (l *tlsListener) rejected(c *tls.Conn, err error) {
	level := slog.LevelWarn
	if errors.Is(err, io.EOF) {
		level = slog.LevelDebug
	}
	st := c.ConnectionState()
	attrs := []any{"remote-addr", c.RemoteAddr().String(), "server-name", st.ServerName}
	if len(st.PeerCertificates) > 0 {
		cert := st.PeerCertificates[0]
		ips := make([]string, len(cert.IPAddresses))
		for i, ip := range cert.IPAddresses {
			ips[i] = ip.String()
		}
		attrs = append(attrs, "ip-addresses", ips, "dns-names", cert.DNSNames)
	}
	attrs = append(attrs, "error", err.Error())
	l.log.Log(context.Background(), level, l.msg, attrs...)
}

// hiddenTLSConn is a TLS connection that net/http does not recognise as
// one.
type hiddenTLSConn struct{ net.Conn }

// handshakenCreds are gRPC transport credentials for connections that
// arrive already through a tlsListener (and for plaintext ones): they do
// no handshake of their own, and report a *tls.Conn's state as
// credentials.TLSInfo, as gRPC's own TLS credentials would, so that
// peer.FromContext(ctx).AuthInfo carries the verified chains.
type handshakenCreds struct{}

func (handshakenCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("server: handshakenCreds are for the server side only")
}

func (handshakenCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if tc, ok := c.(*tls.Conn); ok {
		return c, credentials.TLSInfo{State: tc.ConnectionState(),
			CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
	}
	return c, nil, nil
}

func (handshakenCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (c handshakenCreds) Clone() credentials.TransportCredentials { return c }

func (handshakenCreds) OverrideServerName(string) error { return nil }

// certCommonName is the Subject CN of the leaf of the first non-empty
// verified chain of the RPC's TLS connection, as etcd's AuthInfoFromTLS:
// only with --client-cert-auth, only over TLS, and never for a call the
// gRPC gateway forwards (metadata "grpcgateway-accept"), which would carry
// the gateway's own certificate. ok is false when there is none.
func (s *Server) certCommonName(ctx context.Context) (cn string, ok bool) {
	if !s.cfg.ClientTLS.ClientCertAuth {
		return "", false
	}
	p, found := peer.FromContext(ctx)
	if !found || p == nil || p.AuthInfo == nil {
		return "", false
	}
	ti, isTLS := p.AuthInfo.(credentials.TLSInfo)
	if !isTLS {
		return "", false
	}
	for _, chain := range ti.State.VerifiedChains {
		if len(chain) == 0 {
			continue
		}
		if _, hasMD := metadata.FromIncomingContext(ctx); !hasMD || len(metadata.ValueFromIncomingContext(ctx, "grpcgateway-accept")) > 0 {
			return "", false
		}
		return chain[0].Subject.CommonName, true
	}
	return "", false
}
