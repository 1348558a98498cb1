package snapshot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/snap"
	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/vfs"
	"github.com/etckit/etckit/wal"
	"github.com/spf13/cobra"
	bolt "go.etcd.io/bbolt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// waitReady waits until conn is connected or ctx ends.
func waitReady(ctx context.Context, conn *grpc.ClientConn) error {
	for {
		s := conn.GetState()
		if s == connectivity.Ready {
			return nil
		}
		if !conn.WaitForStateChange(ctx, s) {
			return fmt.Errorf("%w (last state %s)", ctx.Err(), s)
		}
	}
}

// SaveResult describes a saved snapshot.
type SaveResult struct {
	Path          string
	Size          int64  // file size, trailer included
	ServerVersion string // from the stream (online save)
	Took          time.Duration
	// Offline save: the db's consistent_index and the WAL's commit index
	// (0 when the WAL could not be read). WALCommit > ConsistentIndex means
	// committed entries exist only in the WAL: the saved file lacks them.
	ConsistentIndex, WALCommit uint64
}

func newSave(cfg Config) *cobra.Command {
	var endpoints, dataDir, walDir string
	var dialTimeout, cmdTimeout, lockTimeout time.Duration
	var to TLSOptions
	cmd := &cobra.Command{
		Use:   "save FILE (--endpoints HOST:PORT | --data-dir DIR)",
		Short: "Save a db snapshot with its sha256 trailer, from a running server or offline from a data dir",
		Long: `With --endpoints, stream Maintenance.Snapshot from a running etcd or etckit
(as etcdctl snapshot save): the data goes to FILE.part (0600), the sha256
trailer the server appends is checked, the file is fsynced and renamed to FILE.

With --data-dir, copy DIR/member/snap/db offline: the db is opened read-only
and written by one bbolt read transaction (a consistent image; the shared
lock is held only that long), followed by its sha256, through a temporary
file, fsync and rename. A running etcd holds the db exclusively: stop it, or
use --endpoints.`,
		Args:          cobra.ExactArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			var res *SaveResult
			var err error
			switch {
			case (endpoints == "") == (dataDir == ""):
				return cli.Usage("snapshot save: give exactly one of --endpoints and --data-dir")
			case endpoints != "":
				ctx := cmd.Context()
				if ctx == nil {
					ctx = context.Background()
				}
				if cmdTimeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, cmdTimeout)
					defer cancel()
				}
				res, err = SaveFromEndpointFS(ctx, cfg.FS, endpoints, args[0], dialTimeout, to)
			default:
				res, err = SaveFromDataDir(cfg.FS, dataDir, walDir, args[0], lockTimeout)
			}
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Snapshot saved at %s\n", res.Path)
			if res.ServerVersion != "" {
				fmt.Fprintf(w, "Server version %s\n", res.ServerVersion)
			}
			fmt.Fprintf(w, "size %d (%s), sha256 trailer verified\n", res.Size, humanBytes(uint64(res.Size)))
			if res.WALCommit > res.ConsistentIndex {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: the db was applied up to index %d but the WAL commits up to %d: entries %d..%d are only in the WAL (etcd replays them at start) and are not in %s.\n"+
					"For a snapshot that includes them: etckit snapshot restore --from-data-dir %s --to-index %d --data-dir TMP ..., then etckit snapshot save FILE --data-dir TMP\n",
					res.ConsistentIndex, res.WALCommit, res.ConsistentIndex+1, res.WALCommit, res.Path, dataDir, res.WALCommit)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&endpoints, "endpoints", "", "the server to stream from (host:port, http://host:port or https://host:port; one endpoint)")
	fs.StringVar(&to.CACert, "cacert", "", "verify the server with this CA bundle (TLS)")
	fs.StringVar(&to.Cert, "cert", "", "client certificate (TLS)")
	fs.StringVar(&to.Key, "key", "", "client key (TLS)")
	fs.BoolVar(&to.InsecureSkipVerify, "insecure-skip-tls-verify", false, "do not verify the server's certificate (TLS)")
	fs.StringVar(&to.User, "user", "", "name:password for a cluster with auth enabled")
	fs.StringVar(&dataDir, "data-dir", "", "copy this stopped member's db offline instead")
	fs.StringVar(&walDir, "wal-dir", "", "with --data-dir: the member's dedicated WAL directory (to check the db is not behind it)")
	fs.DurationVar(&dialTimeout, "dial-timeout", 5*time.Second, "timeout for connecting to the endpoint")
	fs.DurationVar(&cmdTimeout, "command-timeout", 0, "timeout for the whole transfer (0: none, as etcdctl)")
	fs.DurationVar(&lockTimeout, "timeout", 10*time.Second, "how long to wait for the db lock with --data-dir")
	return cmd
}

// SaveFromDataDir writes dst: the member's db (dataDir/member/snap/db) as
// one bbolt read transaction sees it, followed by its sha256
// (snap.WriteWithTrailer: temporary file, fsync, rename, directory fsync).
// It also reports the db's consistent_index and the commit index of the
// WAL (walDir, default dataDir/member/wal), so that a db behind its WAL is
// noticed.
func SaveFromDataDir(fsys vfs.FS, dataDir, walDir, dst string, lockTimeout time.Duration) (*SaveResult, error) {
	start := time.Now()
	dbPath := filepath.Join(dataDir, "member", "snap", "db")
	if walDir == "" {
		walDir = filepath.Join(dataDir, "member", "wal")
	}
	if _, err := fsys.Stat(dbPath); err != nil {
		return nil, cli.Usage("snapshot save: %v", err)
	}
	b, err := mvcc.OpenBackend(dbPath, mvcc.BackendOptions{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		var le *mvcc.LockedError
		if errors.As(err, &le) {
			return nil, fmt.Errorf("snapshot save: %w; a running member holds its db: stop it, or save from it with --endpoints", err)
		}
		return nil, err
	}
	defer b.Close()
	pr, pw := io.Pipe()
	var ci uint64
	go func() {
		err := b.DB().View(func(tx *bolt.Tx) error {
			var err error
			if ci, _, err = mvcc.ReadConsistentIndex(tx); err != nil {
				return fmt.Errorf("%s: %w", dbPath, err)
			}
			_, err = tx.WriteTo(pw)
			return err
		})
		pw.CloseWithError(err)
	}()
	n, err := snap.WriteWithTrailer(fsys, dst, pr)
	pr.CloseWithError(io.ErrClosedPipe) // unblocks the writer if WriteWithTrailer stopped early
	if err != nil {
		return nil, fmt.Errorf("snapshot save: %s from %s: %w", dst, dbPath, err)
	}
	if err := snap.Verify(fsys, dst); err != nil {
		return nil, fmt.Errorf("snapshot save: verify %s: %w", dst, err)
	}
	return &SaveResult{Path: dst, Size: n, Took: time.Since(start), ConsistentIndex: ci, WALCommit: walCommit(fsys, walDir)}, nil
}

// walCommit returns the commit index of the last HardState in the WAL, 0
// if it cannot be read.
func walCommit(fsys vfs.FS, dir string) uint64 {
	valid, err := wal.ValidSnapshotEntries(dir, wal.Options{FS: fsys})
	if err != nil || len(valid) == 0 {
		return 0
	}
	w, err := wal.OpenForRead(dir, valid[len(valid)-1], wal.Options{FS: fsys})
	if err != nil {
		return 0
	}
	defer w.Close()
	_, hs, _, err := w.ReadAll()
	if err != nil || hs == nil {
		return 0
	}
	return hs.GetCommit()
}

// endpointTarget accepts host:port or an http://, https:// or unix:// URL;
// secure is true for https://.
func endpointTarget(ep string) (target string, secure bool, err error) {
	if strings.Contains(ep, ",") {
		return "", false, cli.Usage("snapshot save: one endpoint only, got %q", ep)
	}
	switch {
	case strings.HasPrefix(ep, "unix://"):
		return ep, false, nil
	case strings.HasPrefix(ep, "https://"):
		return strings.TrimSuffix(strings.TrimPrefix(ep, "https://"), "/"), true, nil
	}
	return strings.TrimSuffix(strings.TrimPrefix(ep, "http://"), "/"), false, nil
}

// TLSOptions are etcdctl's transport security flags.
type TLSOptions struct {
	CACert, Cert, Key  string
	InsecureSkipVerify bool
	// User is etcdctl's --user "name:password" for a cluster with auth
	// enabled: the token from Auth.Authenticate goes with the request.
	User string
}

func (o TLSOptions) any() bool {
	return o.CACert != "" || o.Cert != "" || o.Key != "" || o.InsecureSkipVerify
}

// config builds the client TLS configuration.
func (o TLSOptions) config(serverName string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName, InsecureSkipVerify: o.InsecureSkipVerify}
	if o.CACert != "" {
		pem, err := os.ReadFile(o.CACert)
		if err != nil {
			return nil, cli.Usage("snapshot save: --cacert: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, cli.Usage("snapshot save: --cacert %s holds no PEM certificate", o.CACert)
		}
		c.RootCAs = pool
	}
	if (o.Cert == "") != (o.Key == "") {
		return nil, cli.Usage("snapshot save: --cert and --key go together")
	}
	if o.Cert != "" {
		kp, err := tls.LoadX509KeyPair(o.Cert, o.Key)
		if err != nil {
			return nil, cli.Usage("snapshot save: --cert/--key: %v", err)
		}
		c.Certificates = []tls.Certificate{kp}
	}
	return c, nil
}

// SaveFromEndpoint streams Maintenance.Snapshot from the server at
// endpoint into dst.part, checks the sha256 trailer, fsyncs and renames it
// to dst.
func SaveFromEndpoint(ctx context.Context, endpoint, dst string, dialTimeout time.Duration) (res *SaveResult, err error) {
	return SaveFromEndpointTLS(ctx, endpoint, dst, dialTimeout, TLSOptions{})
}

// SaveFromEndpointTLS is SaveFromEndpoint with transport security: TLS is
// used for https:// endpoints and whenever a TLS option is given.
func SaveFromEndpointTLS(ctx context.Context, endpoint, dst string, dialTimeout time.Duration, to TLSOptions) (res *SaveResult, err error) {
	return SaveFromEndpointFS(ctx, vfs.OS{}, endpoint, dst, dialTimeout, to)
}

// SaveFromEndpointFS is SaveFromEndpointTLS writing dst in fsys.
func SaveFromEndpointFS(ctx context.Context, fsys vfs.FS, endpoint, dst string, dialTimeout time.Duration, to TLSOptions) (res *SaveResult, err error) {
	start := time.Now()
	target, secure, err := endpointTarget(endpoint)
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if secure || to.any() {
		host, _, herr := net.SplitHostPort(target)
		if herr != nil {
			host = target
		}
		tc, err := to.config(host)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("snapshot save: %s: %w", endpoint, err)
	}
	defer conn.Close()
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn.Connect()
	if err := waitReady(dctx, conn); err != nil {
		return nil, fmt.Errorf("snapshot save: connect to %s: %w", endpoint, err)
	}
	if to.User != "" {
		name, pass, ok := strings.Cut(to.User, ":")
		if !ok {
			return nil, cli.Usage("snapshot save: --user wants name:password")
		}
		ar, err := pb.NewAuthClient(conn).Authenticate(ctx, &pb.AuthenticateRequest{Name: name, Password: pass})
		if err != nil {
			return nil, fmt.Errorf("snapshot save: authenticate %s at %s: %w", name, endpoint, err)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "token", ar.GetToken())
	}
	stream, err := pb.NewMaintenanceClient(conn).Snapshot(ctx, &pb.SnapshotRequest{})
	if err != nil {
		return nil, fmt.Errorf("snapshot save: %s: %w", endpoint, err)
	}
	part := dst + ".part"
	f, err := fsys.OpenFile(part, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("snapshot save: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			fsys.Remove(part)
		}
	}()
	var size int64
	var version string
	for {
		resp, rerr := stream.Recv()
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("snapshot save: %s: stream broke after %d bytes: %w", endpoint, size, rerr)
		}
		if resp.GetVersion() != "" {
			version = resp.GetVersion()
		}
		n, werr := f.Write(resp.GetBlob())
		size += int64(n)
		if werr != nil {
			return nil, fmt.Errorf("snapshot save: %w", werr)
		}
	}
	if err = checkTrailer(f, part, size); err != nil {
		return nil, err
	}
	if err = f.Sync(); err != nil {
		return nil, fmt.Errorf("snapshot save: %w", err)
	}
	if err = f.Close(); err != nil {
		return nil, fmt.Errorf("snapshot save: %w", err)
	}
	if err = fsys.Rename(part, dst); err != nil {
		return nil, fmt.Errorf("snapshot save: %w", err)
	}
	if err = fsys.SyncDir(filepath.Dir(dst)); err != nil {
		return nil, fmt.Errorf("snapshot save: %w", err)
	}
	return &SaveResult{Path: dst, Size: size, ServerVersion: version, Took: time.Since(start)}, nil
}

// checkTrailer verifies that the streamed file ends with the sha256 of
// what precedes it (etcd's server appends it).
func checkTrailer(f vfs.File, path string, size int64) error {
	if !snap.HasTrailer(size) {
		return fmt.Errorf("snapshot save: %s: %d bytes received, which cannot end with a sha256 trailer (size %% 512 != 32): the stream was cut short", path, size)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size-snap.TrailerSize)); err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	trailer := make([]byte, snap.TrailerSize)
	if _, err := f.ReadAt(trailer, size-snap.TrailerSize); err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	if !bytes.Equal(h.Sum(nil), trailer) {
		return fmt.Errorf("snapshot save: %s: the sha256 trailer at offset %d does not match the %d bytes received: %w", path, size-snap.TrailerSize, size-snap.TrailerSize, snap.ErrDigestMismatch)
	}
	return nil
}
