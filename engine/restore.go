package engine

// Snapshot restore: a new member directory from a db snapshot, written as
// `etcdutl snapshot restore` writes it (the package doc, "Restore").
// Point-in-time restore is in restore_pitr.go, the file helpers both use in
// restore_files.go; every file operation but bbolt's goes through the
// options' vfs.FS.

// Restore defaults, as etcdutl's flags.
import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/snap"
	"github.com/etckit/etckit/vfs"
	"github.com/etckit/etckit/wal"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

const (
	DefaultRestoreName     = "default"
	DefaultRestorePeerURL  = "http://localhost:2380"
	DefaultRestoreToken    = "etcd-cluster"
	restoreDirMode         = 0o700
	restoreMissingHashHelp = "a file written by `etcdctl snapshot save` or `etckit snapshot save` ends with the sha256 of the bbolt image " +
		"(its size is a multiple of 512 plus 32); a db copied out of a data dir (member/snap/db) has none. " +
		"If you trust the file, pass --skip-hash-check: it is then used as is, without any integrity check"
)

// ErrRestoreTarget is matched by refusals about the target directories
// (data dir not empty, WAL dir exists).
var ErrRestoreTarget = errors.New("engine: restore target is not empty")

// RestoreOptions configures Restore: the flags of `etcdutl snapshot restore`.
type RestoreOptions struct {
	// SnapshotPath is the db snapshot: `etcdctl snapshot save` output (a
	// bbolt image followed by its sha256), or with SkipHashCheck a bare db.
	SnapshotPath string
	// DataDir is --data-dir (default "<Name>.etcd"); it must be absent or
	// empty.
	DataDir string
	// WALDir is --wal-dir (default <DataDir>/member/wal); when given it
	// must not exist.
	WALDir string
	// Name is --name (default "default").
	Name string
	// InitialCluster is --initial-cluster (default "<Name>=http://localhost:2380").
	InitialCluster string
	// InitialClusterToken is --initial-cluster-token (default "etcd-cluster").
	InitialClusterToken string
	// InitialAdvertisePeerURLs is --initial-advertise-peer-urls (default
	// http://localhost:2380); they must equal Name's URLs in InitialCluster.
	InitialAdvertisePeerURLs []string
	// SkipHashCheck is --skip-hash-check: accept a file without a trailer
	// and do not check the trailer of one that has it.
	SkipHashCheck bool
	// BumpRevision is --bump-revision: add this much to the highest
	// revision (requires MarkCompacted).
	BumpRevision uint64
	// MarkCompacted is --mark-compacted: schedule a compaction at the
	// bumped revision (requires BumpRevision > 0).
	MarkCompacted bool
	// NoSync skips fsync of the WAL (tests only).
	NoSync bool
	Logger *slog.Logger
	// FS holds the directories, the WAL and the .snap (default vfs.OS{});
	// bbolt opens the db on disk.
	FS vfs.FS
}

// RestoreResult describes the member directory Restore wrote.
type RestoreResult struct {
	DataDir, WALDir, SnapDir string
	DBPath, SnapPath         string
	MemberID, ClusterID      uint64
	Members                  []Member
	// Index is the raft index of the bootstrap (= number of members), the
	// db's new consistent_index.
	Index uint64
	// Revision is the db's highest revision after the restore (after a
	// bump), CompactRevision the compaction scheduled or finished (-1 none).
	Revision, CompactRevision int64
	// SourceMembers are the members the snapshot's db recorded (the old
	// cluster's identities, replaced by Members).
	SourceMembers []Member
	// PointInTime is set by RestorePointInTime.
	PointInTime *PointInTimeResult
}

func (o *RestoreOptions) setDefaults() {
	if o.Name == "" {
		o.Name = DefaultRestoreName
	}
	if o.InitialCluster == "" {
		o.InitialCluster = o.Name + "=" + DefaultRestorePeerURL
	}
	if o.InitialClusterToken == "" {
		o.InitialClusterToken = DefaultRestoreToken
	}
	if len(o.InitialAdvertisePeerURLs) == 0 {
		o.InitialAdvertisePeerURLs = []string{DefaultRestorePeerURL}
	}
	if o.DataDir == "" {
		o.DataDir = o.Name + ".etcd"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.FS == nil {
		o.FS = vfs.OS{}
	}
}

// restorePlan is what Restore checked before touching the disk.
type restorePlan struct {
	o         RestoreOptions
	fs        vfs.FS
	members   []Member
	self      Member
	clusterID uint64
	walDir    string
	snapDir   string
	dbPath    string
}

// planRestore validates the options as etcdutl does (VerifyBootstrap, data
// dir empty, WAL dir absent) without writing anything.
func planRestore(o RestoreOptions) (*restorePlan, error) {
	o.setDefaults()
	if o.BumpRevision > 0 && !o.MarkCompacted {
		return nil, errors.New("engine: restore: --bump-revision requires --mark-compacted: clients must see the revisions before the bump as compacted, or a watch could resume in the gap")
	}
	if o.MarkCompacted && o.BumpRevision == 0 {
		return nil, errors.New("engine: restore: --mark-compacted requires --bump-revision > 0")
	}
	members, cid, err := InitialMembers(o.InitialCluster, o.InitialClusterToken)
	if err != nil {
		return nil, err
	}
	p := &restorePlan{o: o, fs: o.FS, members: members, clusterID: cid}
	found := false
	for _, m := range members {
		if m.Name == o.Name {
			p.self, found = m, true
		}
	}
	if !found {
		return nil, fmt.Errorf("engine: restore: --name %q is not in --initial-cluster %q", o.Name, o.InitialCluster)
	}
	adv := slices.Clone(o.InitialAdvertisePeerURLs)
	slices.Sort(adv)
	if !slices.Equal(adv, p.self.PeerURLs) {
		return nil, fmt.Errorf("engine: restore: --initial-cluster has %s=%s but --initial-advertise-peer-urls is %s; they must be the same URLs",
			o.Name, strings.Join(p.self.PeerURLs, ","), strings.Join(o.InitialAdvertisePeerURLs, ","))
	}
	if names, err := o.FS.ReadDirNames(o.DataDir); err == nil && len(names) > 0 {
		return nil, fmt.Errorf("%w: data dir %s holds %d entries (first %q); restore only writes a fresh member directory, it never merges into one — pick a new --data-dir or move the old one away",
			ErrRestoreTarget, o.DataDir, len(names), names[0])
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("engine: restore: data dir %s: %w", o.DataDir, err)
	}
	p.walDir = o.WALDir
	if p.walDir == "" {
		p.walDir = filepath.Join(o.DataDir, "member", "wal")
	} else if _, err := o.FS.Stat(p.walDir); err == nil {
		return nil, fmt.Errorf("%w: wal dir %s exists; restore creates it (pick a path that does not exist yet)", ErrRestoreTarget, p.walDir)
	}
	p.snapDir = filepath.Join(o.DataDir, "member", "snap")
	p.dbPath = filepath.Join(p.snapDir, "db")
	return p, nil
}

// Restore writes a new member directory from a db snapshot exactly as
// `etcdutl snapshot restore` (v3.6) does: the db copied (trailer checked and
// dropped), its members and members_removed buckets emptied, optionally the
// revision bumped and marked compacted, one members/<id> entry per initial
// member, meta consistent_index = n and term = 1; a WAL with
// Metadata{NodeID, ClusterID}, the n bootstrap conf-change entries,
// HardState{term 1, vote = smallest ID, commit n} and the snapshot record
// {n, 1, voters}; and the .snap (term 1, index n) whose data is the v2
// membership JSON. Member and cluster IDs are derived from the peer URLs
// and the token, as etcd does. On failure nothing Restore created is left
// behind.
func Restore(o RestoreOptions) (*RestoreResult, error) {
	p, err := planRestore(o)
	if err != nil {
		return nil, err
	}
	if p.o.SnapshotPath == "" {
		return nil, errors.New("engine: restore: no snapshot file given")
	}
	if _, err := p.fs.Stat(p.o.SnapshotPath); err != nil {
		return nil, fmt.Errorf("engine: restore: %w", err)
	}
	var res *RestoreResult
	err = p.withCleanup(func() error {
		if err := p.fs.MkdirAll(p.snapDir, restoreDirMode); err != nil {
			return fmt.Errorf("engine: restore: %w", err)
		}
		if _, err := snap.CopyWithoutTrailer(p.fs, p.o.SnapshotPath, p.dbPath, p.o.SkipHashCheck); err != nil {
			return explainCopyError(p.fs, p.o.SnapshotPath, err)
		}
		// Without a checked trailer nothing vouches for the file: walk its
		// pages before bbolt opens it (bbolt may crash on a damaged page).
		if err := checkDBFile(p.fs, p.dbPath); err != nil {
			return fmt.Errorf("engine: restore: %s is not a usable bbolt db: %w", p.o.SnapshotPath, err)
		}
		res, err = p.finish()
		return err
	})
	return res, err
}

// explainCopyError turns the trailer errors into operator answers.
func explainCopyError(fsys vfs.FS, path string, err error) error {
	switch {
	case errors.Is(err, snap.ErrNoTrailer):
		return fmt.Errorf("engine: restore: %s: snapshot missing hash (no sha256 trailer) and --skip-hash-check is not set: %s: %w",
			path, restoreMissingHashHelp, err)
	case errors.Is(err, snap.ErrDigestMismatch):
		var ce *corrupt.Error
		off := int64(-1)
		if errors.As(err, &ce) {
			off = ce.Offset
		}
		where := damageOffset(fsys, path, off)
		return fmt.Errorf("engine: restore: %s: the snapshot is damaged: its sha256 trailer (at offset %d) does not match the bbolt image before it%s; "+
			"take a new snapshot (do not use --skip-hash-check on a damaged file): %w", path, off, where, err)
	}
	return fmt.Errorf("engine: restore: %w", err)
}

// finish rewrites the db at p.dbPath for the new cluster and writes the WAL
// and the .snap.
func (p *restorePlan) finish() (*RestoreResult, error) {
	n := uint64(len(p.members))
	res := &RestoreResult{
		DataDir: p.o.DataDir, WALDir: p.walDir, SnapDir: p.snapDir, DBPath: p.dbPath,
		MemberID: p.self.ID, ClusterID: p.clusterID, Members: p.members, Index: n, CompactRevision: -1,
	}
	if err := p.rewriteDB(res); err != nil {
		return nil, err
	}
	ids := make([]uint64, len(p.members))
	for i, m := range p.members {
		ids[i] = m.ID
	}
	ents, err := BootstrapEntries(p.members)
	if err != nil {
		return nil, err
	}
	if err := p.fs.MkdirAll(filepath.Dir(p.walDir), restoreDirMode); err != nil {
		return nil, fmt.Errorf("engine: restore: %w", err)
	}
	w, err := wal.Create(p.walDir, MarshalMetadata(p.self.ID, p.clusterID), wal.Options{NoSync: p.o.NoSync, FS: p.fs})
	if err != nil {
		return nil, err
	}
	hs := &raftpb.HardState{Term: proto.Uint64(1), Vote: proto.Uint64(ids[0]), Commit: proto.Uint64(n)}
	if err := w.Save(hs, ents); err != nil {
		_ = w.Close()
		return nil, err
	}
	cs := &raftpb.ConfState{Voters: ids, AutoLeave: proto.Bool(false)}
	data, err := snap.EncodeV2Membership(restoreV2Membership(p.members))
	if err != nil {
		_ = w.Close()
		return nil, err
	}
	s := &raftpb.Snapshot{Data: data, Metadata: &raftpb.SnapshotMetadata{ConfState: cs, Index: proto.Uint64(n), Term: proto.Uint64(1)}}
	if res.SnapPath, err = snap.Save(p.fs, p.snapDir, s); err != nil {
		_ = w.Close()
		return nil, err
	}
	if err := w.SaveSnapshot(wal.Snapshot{Index: n, Term: 1, ConfState: cs}); err != nil {
		_ = w.Close()
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	p.o.Logger.Info("restored snapshot", "path", p.o.SnapshotPath, "data-dir", p.o.DataDir, "wal-dir", p.walDir,
		"member-id", fmt.Sprintf("%x", p.self.ID), "cluster-id", fmt.Sprintf("%x", p.clusterID))
	return res, nil
}

// restoreV2Membership is the v2 store content etcdutl writes: each member's
// raftAttributes only (no attributes: restored members have not published
// client URLs), no version. etcd walks a Go map here, so with several
// members its order varies from run to run; etckit uses ascending IDs.
func restoreV2Membership(members []Member) *snap.Membership {
	m := &snap.Membership{}
	for _, x := range members {
		m.Members = append(m.Members, snap.Member{ID: x.ID, PeerURLs: x.PeerURLs})
	}
	return m
}

// rewriteDB trims and rewrites the membership, bumps the revision and sets
// the consistent index, in one bbolt transaction.
func (p *restorePlan) rewriteDB(res *RestoreResult) error {
	db, err := bolt.Open(p.dbPath, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("engine: restore: open %s: %w", p.dbPath, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(mvcc.BucketMembers)); b != nil {
			_ = b.ForEach(func(_, v []byte) error {
				var m Member
				if json.Unmarshal(v, &m) == nil {
					res.SourceMembers = append(res.SourceMembers, m)
				}
				return nil
			})
		}
		for _, name := range [][]byte{[]byte(mvcc.BucketMembers), []byte(mvcc.BucketMembersRemoved)} {
			if err := emptyBucket(tx, name); err != nil {
				return err
			}
		}
		kb := tx.Bucket([]byte(mvcc.BucketKey))
		var latest mvcc.Revision
		if kb != nil {
			if k, _ := kb.Cursor().Last(); k != nil {
				r, _, err := mvcc.ParseRevKey(k)
				if err != nil {
					return corrupt.New(p.dbPath, -1, corrupt.Damaged, fmt.Sprintf("key bucket: last key %x is not a revision", k), err)
				}
				latest = r
			}
		}
		meta, err := tx.CreateBucketIfNotExists([]byte(mvcc.BucketMeta))
		if err != nil {
			return err
		}
		res.Revision = latest.Main
		if v := meta.Get([]byte(mvcc.MetaFinishedCompactRev)); len(v) > 0 {
			if r, _, err := mvcc.ParseRevKey(v); err == nil {
				res.CompactRevision = r.Main
			}
		}
		if p.o.BumpRevision > 0 {
			if kb == nil {
				if kb, err = tx.CreateBucketIfNotExists([]byte(mvcc.BucketKey)); err != nil {
					return err
				}
			}
			bumped := mvcc.Revision{Main: latest.Main + int64(p.o.BumpRevision)}
			if err := kb.Put(mvcc.RevKey(bumped, false), []byte{}); err != nil {
				return err
			}
			if err := meta.Put([]byte(mvcc.MetaScheduledCompactRev), mvcc.RevKey(bumped, false)); err != nil {
				return err
			}
			p.o.Logger.Info("bumped revision and marked it compacted", "latest-revision", latest.Main,
				"bump-amount", p.o.BumpRevision, "new-latest-revision", bumped.Main)
			res.Revision, res.CompactRevision = bumped.Main, bumped.Main
		}
		mb, err := tx.CreateBucketIfNotExists([]byte(mvcc.BucketMembers))
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists([]byte(mvcc.BucketMembersRemoved)); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists([]byte(mvcc.BucketCluster)); err != nil {
			return err
		}
		for _, m := range p.members {
			if err := mb.Put(memberKey(m.ID), marshalMember(m)); err != nil {
				return err
			}
		}
		n := uint64(len(p.members))
		if err := meta.Put([]byte(mvcc.MetaConsistentIndex), binary.BigEndian.AppendUint64(nil, n)); err != nil {
			return err
		}
		return meta.Put([]byte(mvcc.MetaTerm), binary.BigEndian.AppendUint64(nil, 1))
	})
	cerr := db.Close()
	if err != nil {
		return fmt.Errorf("engine: restore: rewrite %s: %w", p.dbPath, err)
	}
	if cerr != nil {
		return fmt.Errorf("engine: restore: close %s: %w", p.dbPath, cerr)
	}
	return nil
}
