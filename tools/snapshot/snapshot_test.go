package snapshot

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/snap"
	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/tools/dumpdb"
	"github.com/etckit/etckit/tools/tooltest"
	"github.com/etckit/etckit/vfs"
	bolt "go.etcd.io/bbolt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func run(t *testing.T, args ...string) tooltest.Result {
	t.Helper()
	return tooltest.Run(t, NewCommand(), args...)
}

func snapshotFile(t *testing.T) string {
	return tooltest.Fixture(t, "etcd-3.6.16/snapshot-db/small-snapshot.db")
}

var fixtureFlags = []string{"--name", "default", "--initial-cluster", "default=http://127.0.0.1:23800",
	"--initial-advertise-peer-urls", "http://127.0.0.1:23800", "--initial-cluster-token", "etcd-cluster"}

func readFixture(t *testing.T, rel string) string {
	b, err := os.ReadFile(tooltest.Fixture(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestStatusEtcdutlParity: --etcdutl prints exactly what etcdutl printed
// for the fixture (table and json), and the full output keeps etcdutl's
// fields first; HashKV equals etcdutl hashkv's.
func TestStatusEtcdutlParity(t *testing.T) {
	f := snapshotFile(t)
	r := run(t, "status", f, "-w", "table", "--etcdutl")
	if r.Code != 0 || r.Stdout != readFixture(t, "etcd-3.6.16/snapshot-db/snapshot-status.table.txt") {
		t.Errorf("table differs from etcdutl's (code %d):\n%s", r.Code, r.Stdout)
	}
	r = run(t, "status", f, "-w", "json", "--etcdutl")
	if r.Code != 0 || r.Stdout != readFixture(t, "etcd-3.6.16/snapshot-db/snapshot-status.json") {
		t.Errorf("json differs from etcdutl's (code %d):\n%s", r.Code, r.Stdout)
	}
	r = run(t, "status", f, "-w", "json")
	want := strings.TrimSuffix(readFixture(t, "etcd-3.6.16/snapshot-db/snapshot-status.json"), "}\n")
	if !strings.HasPrefix(r.Stdout, want+",") || !strings.Contains(r.Stdout, `"hashKV":{"hash":336939241,"hashRevision":105,"compactRevision":81}`) ||
		!strings.Contains(r.Stdout, `"trailer":"match"`) {
		t.Errorf("json: %s", r.Stdout)
	}
	// Goldens with a relative path, so table widths do not depend on
	// where the repository is.
	data, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	if err := os.WriteFile("small-snapshot.db", data, 0o600); err != nil {
		t.Fatal(err)
	}
	r = run(t, "status", "small-snapshot.db", "-w", "fields", "--etcdutl")
	if r.Stdout != "\"Hash\" : 1966041339\n\"Revision\" : 105\n\"Keys\" : 72\n\"Size\" : 57344\n\"Version\" : 3.6.0\n" {
		t.Errorf("fields: %q", r.Stdout)
	}
	for _, w := range []string{"simple", "table", "json", "fields"} {
		r := run(t, "status", "small-snapshot.db", "-w", w)
		if r.Code != 0 {
			t.Fatalf("-w %s: %v", w, r.Err)
		}
		tooltest.Golden(t, "snapshot/status-small-"+w+".txt", r.Stdout)
	}
}

// TestStatusRestoredDB: the etcdutl-restored db (no trailer) has the hash
// etcdutl printed for it.
func TestStatusRestoredDB(t *testing.T) {
	db := filepath.Join(fixture.Extract(t, "etcd-3.6.16/snapshot-restored.tar.gz"), "restored/member/snap/db")
	r := run(t, "status", db, "-w", "json", "--etcdutl")
	etcdutl := readFixture(t, "etcd-3.6.16/snapshot-db/restored.etcdutl.txt")
	if r.Code != 0 || !strings.Contains(etcdutl, r.Stdout) {
		t.Errorf("status of the restored db %q is not etcdutl's (%v)", r.Stdout, r.Err)
	}
	r = run(t, "status", db)
	if !strings.Contains(r.Stdout, "sha256 trailer: absent") {
		t.Errorf("%s", r.Stdout)
	}
}

// TestStatusDamaged: a flipped page header is reported with its offset
// (exit 1); a flipped value byte as a trailer mismatch.
func TestStatusDamaged(t *testing.T) {
	orig, err := os.ReadFile(snapshotFile(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b := append([]byte(nil), orig...)
	b[16384] ^= 0x40 // header of page 4, a leaf of the key bucket
	p := filepath.Join(dir, "hdr.db")
	os.WriteFile(p, b, 0o600)
	r := run(t, "status", p)
	if r.Code != cli.ExitProblems || !strings.Contains(r.Stdout, "corrupt at offset 16384 (0x4000): page 4: header says page 68") ||
		!strings.Contains(r.Stdout, "sha256 trailer: mismatch") {
		t.Errorf("code %d\n%s", r.Code, r.Stdout)
	}
	tooltest.Golden(t, "snapshot/status-damaged-header.txt", tooltest.Normalize(r.Stdout, dir))
	r = run(t, "status", p, "--etcdutl")
	if r.Code == 0 || !strings.Contains(r.Err.Error(), "offset 16384") {
		t.Errorf("--etcdutl on damage: %d %v", r.Code, r.Err)
	}
}

func TestRestoreCommand(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "restored")
	r := run(t, append([]string{"restore", snapshotFile(t), "--data-dir", out}, fixtureFlags...)...)
	if r.Code != 0 {
		t.Fatalf("restore: %v", r.Err)
	}
	tooltest.Golden(t, "snapshot/restore-small.txt", tooltest.Normalize(r.Stdout, dir))
	// Refused: the directory is no longer empty.
	r = run(t, append([]string{"restore", snapshotFile(t), "--data-dir", out}, fixtureFlags...)...)
	if r.Code != cli.ExitUsage || !strings.Contains(r.Err.Error(), "never merges") {
		t.Errorf("second restore: %d %v", r.Code, r.Err)
	}
	// A db copied out of a data dir: refused with the explanation, accepted with --skip-hash-check.
	db := filepath.Join(out, "member/snap/db")
	r = run(t, append([]string{"restore", db, "--data-dir", filepath.Join(dir, "copy")}, fixtureFlags...)...)
	if r.Code != cli.ExitUsage || !strings.Contains(r.Err.Error(), "snapshot missing hash") || !strings.Contains(r.Err.Error(), "--skip-hash-check") {
		t.Errorf("trailer-less: %d %v", r.Code, r.Err)
	}
	r = run(t, append([]string{"restore", db, "--data-dir", filepath.Join(dir, "copy"), "--skip-hash-check", "-w", "json"}, fixtureFlags...)...)
	if r.Code != 0 || !strings.Contains(r.Stdout, `"revision":105`) {
		t.Errorf("--skip-hash-check: %d %v %s", r.Code, r.Err, r.Stdout)
	}
	// --wal-dir and the bump.
	r = run(t, append([]string{"restore", snapshotFile(t), "--data-dir", filepath.Join(dir, "b"), "--wal-dir", filepath.Join(dir, "bwal"),
		"--bump-revision", "1000", "--mark-compacted"}, fixtureFlags...)...)
	if r.Code != 0 || !strings.Contains(r.Stdout, "revision 1105, compact revision 1105") || !strings.Contains(r.Stdout, "(wal "+filepath.Join(dir, "bwal")+")") {
		t.Errorf("bump: %d %v\n%s", r.Code, r.Err, r.Stdout)
	}
	r = run(t, append([]string{"restore", snapshotFile(t), "--data-dir", filepath.Join(dir, "c"), "--bump-revision", "1000"}, fixtureFlags...)...)
	if r.Code != cli.ExitUsage || !strings.Contains(r.Err.Error(), "requires --mark-compacted") {
		t.Errorf("bump alone: %d %v", r.Code, r.Err)
	}
}

func TestRestorePointInTimeCommand(t *testing.T) {
	src := filepath.Join(fixture.Extract(t, "etcd-3.6.16/small.tar.gz"), "small")
	dir := t.TempDir()
	r := run(t, append([]string{"restore", "--from-data-dir", src, "--to-revision", "90", "--data-dir", filepath.Join(dir, "p90")}, fixtureFlags...)...)
	if r.Code != 0 {
		t.Fatal(r.Err)
	}
	tooltest.Golden(t, "snapshot/restore-pitr-rev90.txt", tooltest.Normalize(r.Stdout, dir))
	r = run(t, "restore", "--from-data-dir", src, "--to-index", "500", "--data-dir", filepath.Join(dir, "x"))
	if r.Code == 0 || !strings.Contains(r.Err.Error(), "not committed") {
		t.Errorf("index 500: %v", r.Err)
	}
	r = run(t, "restore", snapshotFile(t), "--from-data-dir", src, "--to-index", "5")
	if r.Code != cli.ExitUsage {
		t.Errorf("file and --from-data-dir: %v", r.Err)
	}
}

func TestPrintPlan(t *testing.T) {
	r := run(t, "restore", "backup.db", "--name", "m1", "--initial-cluster", "m1=http://10.0.0.1:2380,m2=http://10.0.0.2:2380,m3=http://10.0.0.3:2380",
		"--initial-advertise-peer-urls", "http://10.0.0.1:2380", "--initial-cluster-token", "prod-1", "--bump-revision", "1000000", "--mark-compacted", "--print-plan")
	if r.Code != 0 {
		t.Fatal(r.Err)
	}
	tooltest.Golden(t, "snapshot/plan-three-members.txt", r.Stdout)
	r = run(t, "restore", "--from-data-dir", "/var/lib/etcd", "--to-revision", "4242", "--name", "solo", "--initial-cluster", "solo=http://127.0.0.1:2380",
		"--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--data-dir", "/var/lib/etcd-restored", "--print-plan")
	if r.Code != 0 {
		t.Fatal(r.Err)
	}
	tooltest.Golden(t, "snapshot/plan-pitr-single.txt", r.Stdout)
}

// TestSaveDataDir: an offline save of the etcdutl-restored member is its
// db image plus a matching trailer, and restores.
func TestSaveDataDir(t *testing.T) {
	src := filepath.Join(fixture.Extract(t, "etcd-3.6.16/snapshot-restored.tar.gz"), "restored")
	before := tooltest.HashDir(t, src)
	dst := filepath.Join(t.TempDir(), "saved.db")
	r := run(t, "save", dst, "--data-dir", src)
	if r.Code != 0 {
		t.Fatal(r.Err)
	}
	tooltest.RequireUnchanged(t, src, before)
	if err := snap.Verify(vfs.OS{}, dst); err != nil {
		t.Fatal(err)
	}
	db, _ := os.ReadFile(filepath.Join(src, "member/snap/db"))
	saved, _ := os.ReadFile(dst)
	if len(saved) != len(db)+32 {
		t.Errorf("saved %d bytes, db %d", len(saved), len(db))
	}
	st, err := ReadStatus(vfs.OS{}, dst, time.Second)
	if err != nil || st.Hash != 2309822045 || st.Trailer != "match" {
		t.Errorf("status of the saved file: %+v %v", st, err)
	}
	r = run(t, append([]string{"restore", dst, "--data-dir", filepath.Join(t.TempDir(), "r")}, fixtureFlags...)...)
	if r.Code != 0 {
		t.Errorf("restore of the saved file: %v", r.Err)
	}
	if r := run(t, "save", dst); r.Code != cli.ExitUsage {
		t.Errorf("no source: %v", r.Err)
	}
}

// fakeMaintenance streams a file as etcd's Maintenance.Snapshot does
// (the db image, then its sha256 as the last blob); cut drops the tail.
type fakeMaintenance struct {
	pb.UnimplementedMaintenanceServer
	data  []byte
	cut   int
	token string // required token metadata, if set
}

func (m *fakeMaintenance) Snapshot(_ *pb.SnapshotRequest, srv grpc.ServerStreamingServer[pb.SnapshotResponse]) error {
	if m.token != "" {
		md, _ := metadata.FromIncomingContext(srv.Context())
		if v := md.Get("token"); len(v) != 1 || v[0] != m.token {
			return status.Error(codes.Unauthenticated, "etcdserver: user name is empty")
		}
	}
	d := m.data[:len(m.data)-m.cut]
	for off := 0; off < len(d); off += 4096 {
		end := min(off+4096, len(d))
		if err := srv.Send(&pb.SnapshotResponse{RemainingBytes: uint64(len(d) - end), Blob: d[off:end], Version: "3.6.0"}); err != nil {
			return err
		}
	}
	return nil
}

type fakeAuth struct {
	pb.UnimplementedAuthServer
}

func (fakeAuth) Authenticate(_ context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	if r.Name != "root" || r.Password != "s3cret" {
		return nil, status.Error(codes.InvalidArgument, "etcdserver: authentication failed, invalid user ID or password")
	}
	return &pb.AuthenticateResponse{Token: "tok-1"}, nil
}

func serveFake(t *testing.T, m *fakeMaintenance) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	pb.RegisterMaintenanceServer(s, m)
	pb.RegisterAuthServer(s, fakeAuth{})
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// TestSaveEndpoint streams from an in-process Maintenance server on
// 127.0.0.1: the file equals the stream; a stream cut short is refused and
// leaves neither FILE nor FILE.part.
func TestSaveEndpoint(t *testing.T) {
	data, err := os.ReadFile(snapshotFile(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveFake(t, &fakeMaintenance{data: data})
	dst := filepath.Join(t.TempDir(), "s.db")
	r := run(t, "save", dst, "--endpoints", "http://"+addr)
	if r.Code != 0 {
		t.Fatal(r.Err)
	}
	if !strings.Contains(r.Stdout, "Server version 3.6.0") {
		t.Errorf("%s", r.Stdout)
	}
	got, _ := os.ReadFile(dst)
	if string(got) != string(data) {
		t.Errorf("saved file differs from the stream")
	}
	for _, cut := range []int{32, 1} {
		bad := serveFake(t, &fakeMaintenance{data: data, cut: cut})
		dst := filepath.Join(t.TempDir(), "cut.db")
		r := run(t, "save", dst, "--endpoints", bad)
		if r.Code == 0 || !strings.Contains(r.Err.Error(), "cut short") {
			t.Errorf("cut %d: %v", cut, r.Err)
		}
		for _, p := range []string{dst, dst + ".part"} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("cut %d left %s", cut, p)
			}
		}
	}
	// A damaged byte in the stream: the trailer check names the offset.
	dmg := append([]byte(nil), data...)
	dmg[20000] ^= 1
	bad := serveFake(t, &fakeMaintenance{data: dmg})
	r = run(t, "save", filepath.Join(t.TempDir(), "d.db"), "--endpoints", bad)
	if r.Code == 0 || !strings.Contains(r.Err.Error(), "trailer at offset 57344 does not match") {
		t.Errorf("damaged stream: %v", r.Err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := SaveFromEndpoint(ctx, "127.0.0.1:1", filepath.Join(t.TempDir(), "n.db"), time.Second); err == nil {
		t.Error("cancelled save succeeded")
	}
}

// TestSaveDataDirBehindWAL: a db whose consistent_index is behind the WAL
// commit (etcd crashed before its batch commit) is saved with a warning
// that names the missing entries and the point-in-time way to include them.
func TestSaveDataDirBehindWAL(t *testing.T) {
	src := filepath.Join(fixture.Extract(t, "etcd-3.6.16/small.tar.gz"), "small")
	dst := filepath.Join(t.TempDir(), "s.db")
	r := run(t, "save", dst, "--data-dir", src)
	if r.Code != 0 || r.Stderr != "" {
		t.Fatalf("clean save: %v %q", r.Err, r.Stderr)
	}
	db, err := bolt.Open(filepath.Join(src, "member/snap/db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("consistent_index"), binary.BigEndian.AppendUint64(nil, 100))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	r = run(t, "save", dst, "--data-dir", src)
	if r.Code != 0 || !strings.Contains(r.Stderr, "applied up to index 100 but the WAL commits up to 113: entries 101..113 are only in the WAL") ||
		!strings.Contains(r.Stderr, "--to-index 113") {
		t.Fatalf("behind save: %v %q", r.Err, r.Stderr)
	}
}

// TestStatusLargeFixture: the 93 MB db of the snapshot fixture gives the
// status and HashKV etcdutl recorded for it.
func TestStatusLargeFixture(t *testing.T) {
	db := filepath.Join(fixture.Extract(t, "etcd-3.6.16/snapshot.tar.gz"), "snapshot/member/snap/db")
	r := run(t, "status", db, "-w", "json", "--etcdutl")
	if r.Code != 0 || !strings.Contains(readFixture(t, "etcd-3.6.16/snapshot/snapshot.etcdutl.txt"), r.Stdout) {
		t.Errorf("status %q (%v) is not etcdutl's", r.Stdout, r.Err)
	}
	st, err := ReadStatus(vfs.OS{}, db, time.Second)
	if err != nil || st.HashKV == nil {
		t.Fatal(err)
	}
	want := readFixture(t, "etcd-3.6.16/snapshot/snapshot.hashkv-etcdutl-v3.7.3.json")
	got := fmt.Sprintf(`{"hash":%d,"hashRevision":%d,"compactRevision":%d}`, st.HashKV.Hash, st.HashKV.Revision, st.HashKV.CompactRevision)
	if strings.TrimSpace(want) != got {
		t.Errorf("hashkv %s, etcdutl %s", got, want)
	}
}

// selfSigned writes a CA-less self-signed certificate for 127.0.0.1 (fixed
// serial; the key is generated) and returns cert and key paths.
func selfSigned(t *testing.T, dir string) (certPath, keyPath string, cert tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "etckit-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, err = tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath, cert
}

// TestSaveEndpointTLS: an https:// endpoint is verified with --cacert,
// refused without it, accepted with --insecure-skip-tls-verify.
func TestSaveEndpointTLS(t *testing.T) {
	data, err := os.ReadFile(snapshotFile(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, _, cert := selfSigned(t, dir)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	pb.RegisterMaintenanceServer(s, &fakeMaintenance{data: data})
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	ep := "https://" + lis.Addr().String()
	if r := run(t, "save", filepath.Join(dir, "a.db"), "--endpoints", ep, "--cacert", certPath); r.Code != 0 {
		t.Fatalf("--cacert: %v", r.Err)
	}
	if r := run(t, "save", filepath.Join(dir, "b.db"), "--endpoints", ep, "--dial-timeout", "1s"); r.Code == 0 {
		t.Fatal("unverified server accepted")
	}
	if r := run(t, "save", filepath.Join(dir, "c.db"), "--endpoints", ep, "--insecure-skip-tls-verify"); r.Code != 0 {
		t.Fatalf("--insecure-skip-tls-verify: %v", r.Err)
	}
	if err := snap.Verify(vfs.OS{}, filepath.Join(dir, "a.db")); err != nil {
		t.Fatal(err)
	}
}

// TestSaveEndpointAuth: --user authenticates and sends the token; without
// it (or with a wrong password) the server's refusal is reported.
func TestSaveEndpointAuth(t *testing.T) {
	data, err := os.ReadFile(snapshotFile(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveFake(t, &fakeMaintenance{data: data, token: "tok-1"})
	dir := t.TempDir()
	if r := run(t, "save", filepath.Join(dir, "a.db"), "--endpoints", addr, "--user", "root:s3cret"); r.Code != 0 {
		t.Fatalf("--user: %v", r.Err)
	}
	if r := run(t, "save", filepath.Join(dir, "b.db"), "--endpoints", addr); r.Code == 0 || !strings.Contains(r.Err.Error(), "user name is empty") {
		t.Errorf("no user: %v", r.Err)
	}
	if r := run(t, "save", filepath.Join(dir, "c.db"), "--endpoints", addr, "--user", "root:wrong"); r.Code == 0 || !strings.Contains(r.Err.Error(), "authentication failed") {
		t.Errorf("wrong password: %v", r.Err)
	}
}

// TestStatusAgreesWithDoctor: snapshot status and doctor (dump-db's page
// check) read a db with the same walker, so they name the same first
// damage on every page whose header id is flipped.
func TestStatusAgreesWithDoctor(t *testing.T) {
	orig, err := os.ReadFile(snapshotFile(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	damaged := 0
	for off := 2 * 4096; off+4096 <= len(orig); off += 4096 {
		b := append([]byte(nil), orig...)
		b[off] ^= 0x40
		p := filepath.Join(dir, fmt.Sprintf("p%d.db", off/4096))
		os.WriteFile(p, b, 0o600)
		st, err := ReadStatus(vfs.OS{}, p, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		probs, err := dumpdb.CheckPages(p)
		if err != nil {
			t.Fatal(err)
		}
		var fromStatus string
		for _, s := range st.Problems {
			if strings.HasPrefix(s, "damaged bbolt image: ") {
				fromStatus = strings.TrimPrefix(s, "damaged bbolt image: ")
			}
		}
		fromDoctor := ""
		if len(probs) > 0 {
			fromDoctor = probs[0].Err(p).Error()
			damaged++
		}
		if fromStatus != fromDoctor {
			t.Errorf("page %d: status says %q, doctor %q", off/4096, fromStatus, fromDoctor)
		}
	}
	if damaged == 0 {
		t.Fatal("no flipped header was found by either")
	}
}
