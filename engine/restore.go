package engine

// Snapshot restore: a new member directory from a db snapshot, written as
// `etcdutl snapshot restore` writes it (FORMATS.md §6), and point-in-time
// restore from a member's own data directory (a base db plus the committed
// WAL entries up to a chosen index, applied to a copy).

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/mvcc/boltfile"
	"github.com/etckit/etckit/snap"
	"github.com/etckit/etckit/vfs"
	"github.com/etckit/etckit/wal"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Restore defaults, as etcdutl's flags.
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
}

// restorePlan is what Restore checked before touching the disk.
type restorePlan struct {
	o         RestoreOptions
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
	p := &restorePlan{o: o, members: members, clusterID: cid}
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
	if names, err := os.ReadDir(o.DataDir); err == nil && len(names) > 0 {
		return nil, fmt.Errorf("%w: data dir %s holds %d entries (first %q); restore only writes a fresh member directory, it never merges into one — pick a new --data-dir or move the old one away",
			ErrRestoreTarget, o.DataDir, len(names), names[0].Name())
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("engine: restore: data dir %s: %w", o.DataDir, err)
	}
	p.walDir = o.WALDir
	if p.walDir == "" {
		p.walDir = filepath.Join(o.DataDir, "member", "wal")
	} else if _, err := os.Lstat(p.walDir); err == nil {
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
	if _, err := os.Stat(p.o.SnapshotPath); err != nil {
		return nil, fmt.Errorf("engine: restore: %w", err)
	}
	var res *RestoreResult
	err = p.withCleanup(func() error {
		if err := os.MkdirAll(p.snapDir, restoreDirMode); err != nil {
			return fmt.Errorf("engine: restore: %w", err)
		}
		if _, err := snap.CopyWithoutTrailer(vfs.OS{}, p.o.SnapshotPath, p.dbPath, p.o.SkipHashCheck); err != nil {
			return explainCopyError(p.o.SnapshotPath, err)
		}
		// Without a checked trailer nothing vouches for the file: walk its
		// pages before bbolt opens it (bbolt may crash on a damaged page).
		if err := checkDBFile(p.dbPath); err != nil {
			return fmt.Errorf("engine: restore: %s is not a usable bbolt db: %w", p.o.SnapshotPath, err)
		}
		res, err = p.finish()
		return err
	})
	return res, err
}

// explainCopyError turns the trailer errors into operator answers.
func explainCopyError(path string, err error) error {
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
		where := damageOffset(path, off)
		return fmt.Errorf("engine: restore: %s: the snapshot is damaged: its sha256 trailer (at offset %d) does not match the bbolt image before it%s; "+
			"take a new snapshot (do not use --skip-hash-check on a damaged file): %w", path, off, where, err)
	}
	return fmt.Errorf("engine: restore: %w", err)
}

// withCleanup runs fn and, if it fails, removes what the restore created.
func (p *restorePlan) withCleanup(fn func() error) error {
	_, dataErr := os.Stat(p.o.DataDir)
	dataExisted := dataErr == nil
	walOutside := p.o.WALDir != ""
	err := fn()
	if err == nil {
		return nil
	}
	if dataExisted {
		_ = os.RemoveAll(filepath.Join(p.o.DataDir, "member"))
	} else {
		_ = os.RemoveAll(p.o.DataDir)
	}
	if walOutside {
		_ = os.RemoveAll(p.walDir)
		_ = os.RemoveAll(p.walDir + ".tmp")
	}
	return err
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
	if err := os.MkdirAll(filepath.Dir(p.walDir), restoreDirMode); err != nil {
		return nil, fmt.Errorf("engine: restore: %w", err)
	}
	w, err := wal.Create(p.walDir, MarshalMetadata(p.self.ID, p.clusterID), wal.Options{NoSync: p.o.NoSync})
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
	if res.SnapPath, err = snap.Save(vfs.OS{}, p.snapDir, s); err != nil {
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

// emptyBucket deletes every key of a bucket, creating it if missing.
func emptyBucket(tx *bolt.Tx, name []byte) error {
	b, err := tx.CreateBucketIfNotExists(name)
	if err != nil {
		return err
	}
	var keys [][]byte
	if err := b.ForEach(func(k, _ []byte) error {
		keys = append(keys, slices.Clone(k))
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// damageOffset looks for the first structurally damaged bbolt page of a db
// image (see boltfile.Check) to say where a digest mismatch comes from.
func damageOffset(path string, imageSize int64) string {
	if imageSize <= 0 {
		return ""
	}
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if cerr := boltfile.Check(f, imageSize, boltfile.Options{Limit: 1}).First(path); cerr != nil {
		return fmt.Sprintf("; first damage found at offset %d: %s", cerr.Offset, cerr.Reason)
	}
	return "; the page structure is intact, so the damage is inside key or value bytes (sha256 cannot say where)"
}

// PointInTimeOptions configures RestorePointInTime: the target member (as
// for Restore; SnapshotPath is unused) and the source member directory and
// point to restore.
type PointInTimeOptions struct {
	RestoreOptions
	// FromDataDir is the source member's data directory; it is only read.
	FromDataDir string
	// FromWALDir is the source's WAL directory (default
	// <FromDataDir>/member/wal).
	FromWALDir string
	// ToIndex is the raft index to restore to (the state after applying
	// that entry). Exactly one of ToIndex and ToRevision is given.
	ToIndex uint64
	// ToRevision is the MVCC revision to restore to: the state right after
	// the entry that created that revision.
	ToRevision int64
	// Base limits the bases considered to one kind ("db", "snap.db" or
	// "empty"); "" takes the newest base that fits. Replaying from "empty"
	// when the db could serve proves the WAL reproduces the db.
	Base string
}

// PointInTimeResult says how a point-in-time restore was made.
type PointInTimeResult struct {
	// BaseKind is "db" (the source's member/snap/db), "snap.db" (a db
	// snapshot received from a leader) or "empty" (a new store, when the
	// WAL reaches back to index 0).
	BaseKind string
	BasePath string
	// BaseIndex is the base's consistent_index, BaseRevision its revision.
	BaseIndex    uint64
	BaseRevision int64
	// Applied is the number of WAL entries applied on top of the base,
	// through index Index; Revision and CompactRevision are the store's
	// afterwards.
	Applied                   int
	Index                     uint64
	Revision, CompactRevision int64
	// WALCommit is the source WAL's commit index (the last restorable one).
	WALCommit uint64
}

// pitrBase is one candidate starting state.
type pitrBase struct {
	kind, path string
	index      uint64
}

// RestorePointInTime restores the state a member had at a raft index (or
// MVCC revision) into a new member directory: the newest base at or below
// the target — the source db, a .snap.db, or an empty store when the WAL
// reaches back to index 0 — is copied (one bbolt read transaction, so a
// base held by a running member is still consistent), the committed WAL
// entries after it up to the target are applied to the copy with the
// engine's apply, and the copy is then turned into a new member exactly as
// Restore does (members rewritten, new WAL and .snap; --bump-revision and
// --mark-compacted work the same). The source is never modified.
func RestorePointInTime(o PointInTimeOptions) (*RestoreResult, error) {
	if (o.ToIndex == 0) == (o.ToRevision == 0) {
		return nil, errors.New("engine: point-in-time restore: give exactly one of --to-index and --to-revision")
	}
	if o.ToRevision < 0 {
		return nil, fmt.Errorf("engine: point-in-time restore: revision %d is negative", o.ToRevision)
	}
	if o.FromDataDir == "" {
		return nil, errors.New("engine: point-in-time restore: --from-data-dir is required")
	}
	switch o.Base {
	case "", "db", "snap.db", "empty":
	default:
		return nil, fmt.Errorf("engine: point-in-time restore: unknown base %q (want db, snap.db or empty)", o.Base)
	}
	p, err := planRestore(o.RestoreOptions)
	if err != nil {
		return nil, err
	}
	srcWAL := o.FromWALDir
	if srcWAL == "" {
		srcWAL = filepath.Join(o.FromDataDir, "member", "wal")
	}
	srcSnap := filepath.Join(o.FromDataDir, "member", "snap")
	if abs(srcSnap) == abs(p.snapDir) || abs(srcWAL) == abs(p.walDir) {
		return nil, errors.New("engine: point-in-time restore: the target directories must differ from the source's")
	}

	// The WAL from its oldest readable snapshot record on.
	valid, err := wal.ValidSnapshotEntries(srcWAL, wal.Options{})
	if err != nil {
		return nil, fmt.Errorf("engine: point-in-time restore: read WAL %s: %w", srcWAL, err)
	}
	if len(valid) == 0 {
		return nil, fmt.Errorf("engine: point-in-time restore: WAL %s has no committed snapshot record to start reading at", srcWAL)
	}
	start := valid[0]
	w, err := wal.OpenForRead(srcWAL, start, wal.Options{})
	if err != nil {
		return nil, err
	}
	_, hs, ents, err := w.ReadAll()
	_ = w.Close()
	if err != nil {
		return nil, fmt.Errorf("engine: point-in-time restore: read WAL %s: %w", srcWAL, err)
	}
	commit := hs.GetCommit()
	if o.ToIndex > 0 {
		if o.ToIndex > commit {
			return nil, fmt.Errorf("engine: point-in-time restore: index %d is not committed in %s (commit index %d); entries after the commit index may never have been applied by the cluster",
				o.ToIndex, srcWAL, commit)
		}
		if o.ToIndex < start.Index {
			return nil, fmt.Errorf("engine: point-in-time restore: index %d is older than the WAL (it starts after index %d)", o.ToIndex, start.Index)
		}
	}

	// Candidate bases, newest first.
	var bases []pitrBase
	want := func(kind string) bool { return o.Base == "" || o.Base == kind }
	if db := filepath.Join(srcSnap, "db"); want("db") && fileExists(db) {
		ci, err := readConsistentIndex(db)
		if err != nil {
			return nil, err
		}
		bases = append(bases, pitrBase{"db", db, ci})
	}
	if names, err := os.ReadDir(srcSnap); err == nil && want("snap.db") {
		for _, n := range names {
			if _, ok := snap.ParseDBFileName(n.Name()); ok {
				path := filepath.Join(srcSnap, n.Name())
				ci, err := readConsistentIndex(path)
				if err != nil {
					return nil, err
				}
				bases = append(bases, pitrBase{"snap.db", path, ci})
			}
		}
	}
	if start.Index == 0 && want("empty") {
		bases = append(bases, pitrBase{"empty", "", 0})
	}
	slices.SortStableFunc(bases, func(a, b pitrBase) int {
		switch {
		case a.index > b.index:
			return -1
		case a.index < b.index:
			return 1
		}
		return 0
	})

	var res *RestoreResult
	err = p.withCleanup(func() error {
		if err := os.MkdirAll(p.snapDir, restoreDirMode); err != nil {
			return fmt.Errorf("engine: restore: %w", err)
		}
		var tried []string
		for _, b := range bases {
			if b.index < start.Index || (o.ToIndex > 0 && b.index > o.ToIndex) || (o.Base != "" && o.Base != b.kind) {
				tried = append(tried, fmt.Sprintf("%s %s at index %d", b.kind, b.path, b.index))
				continue
			}
			pr, ok, err := replayOnto(p.dbPath, b, ents, commit, o)
			if err != nil {
				return err
			}
			if !ok { // revision target older than this base
				tried = append(tried, fmt.Sprintf("%s %s at index %d (revision %d)", b.kind, b.path, b.index, pr.BaseRevision))
				_ = os.Remove(p.dbPath)
				continue
			}
			pr.WALCommit = commit
			if res, err = p.finish(); err != nil {
				return err
			}
			res.PointInTime = pr
			return nil
		}
		target := fmt.Sprintf("index %d", o.ToIndex)
		if o.ToRevision > 0 {
			target = fmt.Sprintf("revision %d", o.ToRevision)
		}
		return fmt.Errorf("engine: point-in-time restore: no base at or below %s: the WAL in %s starts after index %d and the dbs found are %v; an older state is only in an older backup",
			target, srcWAL, start.Index, tried)
	})
	return res, err
}

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return filepath.Clean(p)
	}
	return a
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// openSourceDB opens a source db read-only, refusing to wait long for a
// member that holds it.
func openSourceDB(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 10e9})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("engine: %s is locked by a running member (waited 10s): %w", path, err)
		}
		return nil, fmt.Errorf("engine: open %s: %w", path, err)
	}
	return db, nil
}

// checkDBFile walks the pages of a whole db file (boltfile.Check) and
// returns the first damage.
func checkDBFile(path string) error {
	rep, err := boltfile.CheckFile(path, boltfile.Options{Limit: 1})
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	if cerr := rep.First(path); cerr != nil {
		return cerr
	}
	return nil
}

func readConsistentIndex(path string) (uint64, error) {
	if err := checkDBFile(path); err != nil {
		return 0, fmt.Errorf("engine: point-in-time restore: base %s is damaged: %w", path, err)
	}
	db, err := openSourceDB(path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var ci uint64
	err = db.View(func(tx *bolt.Tx) error {
		var err error
		if ci, _, err = mvcc.ReadConsistentIndex(tx); err != nil {
			return corrupt.New(path, -1, corrupt.Damaged, "meta bucket", err)
		}
		return nil
	})
	return ci, err
}

// copyDB writes a consistent copy of the db at src to dst (one read
// transaction, fsynced, mode 0600).
func copyDB(src, dst string) error {
	db, err := openSourceDB(src)
	if err != nil {
		return err
	}
	defer db.Close()
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		_, err := tx.WriteTo(f)
		return err
	})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("engine: copy %s to %s: %w", src, dst, err)
	}
	return nil
}

// replayOnto builds the base b at dst and applies the committed entries
// after it up to the target. ok is false (and nothing applied) when the
// target revision is older than the base.
func replayOnto(dst string, b pitrBase, ents []*raftpb.Entry, commit uint64, o PointInTimeOptions) (*PointInTimeResult, bool, error) {
	pr := &PointInTimeResult{BaseKind: b.kind, BasePath: b.path, BaseIndex: b.index, Index: b.index}
	if b.kind != "empty" {
		if err := copyDB(b.path, dst); err != nil {
			return nil, false, err
		}
	}
	st, err := mvcc.Open(dst, mvcc.Options{})
	if err != nil {
		return nil, false, err
	}
	closeStore := func(err error) error {
		if cerr := st.Close(); err == nil && cerr != nil {
			err = cerr
		}
		return err
	}
	e := &Engine{fs: vfs.OS{}, store: st, dbPath: dst, log: slog.New(slog.DiscardHandler),
		members: make(map[uint64]*Member), removed: make(map[uint64]bool), confState: &raftpb.ConfState{}}
	if b.kind == "empty" {
		// A new member's db, as bootstrap creates it.
		if err := st.Backend().Write(func(w *mvcc.WriteTx) error {
			for _, bk := range mvcc.AllBuckets() {
				w.EnsureBucket(bk)
			}
			w.Put([]byte(mvcc.BucketAuth), []byte("authRevision"), binary.BigEndian.AppendUint64(nil, 1))
			return nil
		}); err != nil {
			return nil, false, closeStore(err)
		}
	} else if err := e.loadMembership(nil); err != nil {
		return nil, false, closeStore(err)
	}
	if e.ci, _, err = st.ConsistentIndex(); err != nil {
		return nil, false, closeStore(err)
	}
	// Auth requests in the WAL replay too (users, roles, permissions);
	// BcryptCost only matters for pre-3.5 entries that carry a password.
	if err := e.openAuth(); err != nil {
		return nil, false, closeStore(err)
	}
	pr.BaseRevision = st.Rev()
	if o.ToRevision > 0 && pr.BaseRevision > o.ToRevision {
		return pr, false, closeStore(nil)
	}
	voters, learners := map[uint64]bool{}, map[uint64]bool{}
	applyConf := func(cc raftpb.ConfChangeI) *raftpb.ConfState {
		for _, c := range cc.AsV2().GetChanges() {
			id := c.GetNodeId()
			switch c.GetType() {
			case raftpb.ConfChangeAddNode:
				voters[id], learners[id] = true, false
			case raftpb.ConfChangeAddLearnerNode:
				learners[id], voters[id] = true, false
			case raftpb.ConfChangeRemoveNode:
				voters[id], learners[id] = false, false
			}
		}
		cs := &raftpb.ConfState{AutoLeave: proto.Bool(false)}
		for id, ok := range voters {
			if ok {
				cs.Voters = append(cs.Voters, id)
			}
		}
		for id, ok := range learners {
			if ok {
				cs.Learners = append(cs.Learners, id)
			}
		}
		slices.Sort(cs.Voters)
		slices.Sort(cs.Learners)
		return cs
	}
	{
		v := st.Backend().View()
		if raw, ok := v.Get([]byte(mvcc.BucketMeta), []byte(mvcc.MetaConfState)); ok {
			var cs confStateJSON
			if json.Unmarshal(raw, &cs) == nil {
				for _, id := range cs.Voters {
					voters[id] = true
				}
				for _, id := range cs.Learners {
					learners[id] = true
				}
			}
		}
		v.Release()
	}
	reached := o.ToRevision > 0 && st.Rev() == o.ToRevision
	next := b.index + 1
	for _, ent := range ents {
		if reached {
			break
		}
		idx := ent.GetIndex()
		if idx <= b.index {
			continue
		}
		if o.ToIndex > 0 && idx > o.ToIndex || idx > commit {
			break
		}
		if idx != next {
			return nil, false, closeStore(fmt.Errorf("engine: point-in-time restore: the WAL lacks index %d (next entry is %d)", next, idx))
		}
		if err := e.Apply([]*raftpb.Entry{ent}, applyConf, nil); err != nil {
			return nil, false, closeStore(err)
		}
		next++
		pr.Applied++
		pr.Index = idx
		if o.ToRevision > 0 && st.Rev() >= o.ToRevision {
			reached = true
		}
	}
	switch {
	case o.ToIndex > 0 && pr.Index != o.ToIndex:
		return nil, false, closeStore(fmt.Errorf("engine: point-in-time restore: the WAL ends at index %d before the target %d", pr.Index, o.ToIndex))
	case o.ToRevision > 0 && !reached:
		return nil, false, closeStore(fmt.Errorf("engine: point-in-time restore: revision %d is beyond the last committed entry (index %d reaches revision %d)",
			o.ToRevision, pr.Index, st.Rev()))
	}
	pr.Revision, pr.CompactRevision = st.Rev(), st.CompactRev()
	if err := st.Commit(); err != nil {
		return nil, false, closeStore(err)
	}
	return pr, true, closeStore(nil)
}
