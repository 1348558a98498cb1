package engine

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etckit/etckit/auth"
	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/snap"
	"github.com/etckit/etckit/vfs"
	"github.com/etckit/etckit/wal"
	bolt "go.etcd.io/bbolt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Defaults, as etcd v3.6.
const (
	DefaultSnapshotCount = 10000
	// DefaultSnapshotCatchUpEntries is how many entries stay in the raft
	// log after a snapshot, for slow followers.
	DefaultSnapshotCatchUpEntries = 5000
	DefaultMaxSnapshots           = 5
	DefaultMaxWALs                = 5
	// EtcdVersion is the etcd release etckit runs as: its server version in
	// /version, Status and the peer headers, and so the highest cluster
	// and storage version it serves (etcd 3.7's API, schema and raft
	// requests; a cluster version above it is refused).
	EtcdVersion = "3.7.3"
)

// Options configures Open. Name, DataDir and (for a new member)
// InitialCluster are required; the rest defaults to etcd's values.
type Options struct {
	Name    string
	DataDir string
	// WALDir is --wal-dir; default <DataDir>/member/wal.
	WALDir string
	// InitialCluster is --initial-cluster ("name=url,..."), used only when
	// the member is new (no WAL yet).
	InitialCluster string
	// InitialClusterToken is --initial-cluster-token (default "etcd-cluster").
	InitialClusterToken string
	// InitialAdvertisePeerURLs must equal this member's URLs in
	// InitialCluster when given.
	InitialAdvertisePeerURLs []string
	// SnapshotCount is --snapshot-count: a snapshot every so many applied
	// entries (default 10,000).
	SnapshotCount uint64
	// CatchUpEntries stay in the in-memory raft log after a snapshot.
	CatchUpEntries uint64
	// MaxLearners is --max-learners: how many learners the membership may
	// hold (default 1). Conf changes are checked against it when applied,
	// so every member of a cluster must have the same.
	MaxLearners int
	// MaxSnapshots and MaxWALs are how many .snap files and WAL segments
	// are kept (default 5; negative disables purging).
	MaxSnapshots, MaxWALs int
	// FS holds the WAL and the .snap files (default vfs.OS{}). The bbolt db
	// always goes through the operating system.
	FS vfs.FS
	// DBPath overrides <DataDir>/member/snap/db (crash tests keep the WAL
	// in a crashable in-memory FS and the db on disk).
	DBPath string
	// NoSync skips fsync (tests only, like --unsafe-no-fsync).
	NoSync bool
	// WALSegmentSize overrides the WAL segment size (tests).
	WALSegmentSize int64
	// Join, for a member without a WAL, joins a running cluster (etcd's
	// --initial-cluster-state=existing) under the IDs the cluster gave it:
	// the WAL starts without bootstrap entries, and the leader sends the
	// log or a snapshot.
	Join *Join
	// ForceNewCluster is etcd's --force-new-cluster: an existing member
	// restarts as the only member of its cluster (forcenew.go). The
	// entries above the commit index are dropped, conf changes removing
	// every other member are appended and committed; the cluster ID stays.
	// Without a WAL it does nothing.
	ForceNewCluster bool
	// MVCC configures the key-value store.
	MVCC mvcc.Options
	// AnyClusterVersion lets a tool open and replay a data dir whose
	// cluster version is above etckit's own; a member refuses it as etcd
	// does ("invalid downgrade").
	AnyClusterVersion bool
	// LeaseCheckpointPersist is etcd's feature gate LeaseCheckpointPersist:
	// applied lease checkpoints are stored in the lease bucket even while
	// the cluster version is below 3.6 (from 3.6 on they always are).
	LeaseCheckpointPersist bool
	// Auth configures the auth store (tokens, bcrypt cost).
	Auth   auth.Options
	Logger *slog.Logger
	// OnApply, when set, is called after each applied request with its
	// response, its time and whether it failed (the server's metrics).
	OnApply func(r *pb.InternalRaftRequest, resp proto.Message, took time.Duration, failed bool)
	// OnSnapSave, when set, is told how long each .snap file took to
	// write (encode, write, fsync, rename).
	OnSnapSave func(time.Duration)
	// OnWALSync is the WAL's sync observer (wal.Options.OnSync).
	OnWALSync func(n int64, write, fsync time.Duration, synced bool)
}

// Join is what a joining member learned from the cluster's /members.
type Join struct {
	ClusterID, MemberID uint64
}

func (o *Options) setDefaults() {
	if o.WALDir == "" {
		o.WALDir = filepath.Join(o.DataDir, "member", "wal")
	}
	if o.InitialClusterToken == "" {
		o.InitialClusterToken = "etcd-cluster"
	}
	if o.SnapshotCount == 0 {
		o.SnapshotCount = DefaultSnapshotCount
	}
	if o.CatchUpEntries == 0 {
		o.CatchUpEntries = DefaultSnapshotCatchUpEntries
	}
	if o.MaxSnapshots == 0 {
		o.MaxSnapshots = DefaultMaxSnapshots
	}
	if o.MaxLearners == 0 {
		o.MaxLearners = 1
	}
	if o.MaxWALs == 0 {
		o.MaxWALs = DefaultMaxWALs
	}
	if o.FS == nil {
		o.FS = vfs.OS{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.NoSync {
		o.MVCC.Backend.NoSync = true
	}
}

// Engine is one member's data directory, open for serving: the WAL, the
// snapshots, the MVCC store and the raft log in memory.
type Engine struct {
	opts    Options
	fs      vfs.FS
	snapDir string
	dbPath  string
	log     *slog.Logger

	w     *wal.WAL
	store *mvcc.Store
	rs    *raft.MemoryStorage

	id, clusterID uint64
	bootstrapped  bool // this Open created the member

	mu      sync.RWMutex // guards the fields below (read by the gRPC side)
	members map[uint64]*Member
	removed map[uint64]bool
	// storeP mirrors store for other goroutines (Store), since a received
	// snapshot replaces the store while requests run.
	storeP atomic.Pointer[mvcc.Store]
	// inflightSnapshots counts snapshots being sent (HoldRaftLog).
	inflightSnapshots atomic.Int64
	auth              *auth.Store
	clusterVersion    string
	downgrade         DowngradeInfo
	alarms            []*pb.AlarmMember
	confState         *raftpb.ConfState
	appliedIndex      uint64
	appliedTerm       uint64
	snapshotIndex     uint64
	// forceSnapshot is etcd's forceDiskSnapshot: set when an applied
	// ClusterVersionSet lowered the cluster version.
	forceSnapshot bool
	commitIndex   uint64
	ci            uint64 // consistent_index of the db
	term          uint64 // last known raft term (from HardState)
	forceNew      *ForceNewResult
}

// Open opens the member in opts.DataDir, bootstrapping it from
// opts.InitialCluster if its WAL directory holds no segment.
func Open(opts Options) (*Engine, error) {
	opts.setDefaults()
	if opts.DataDir == "" {
		return nil, errors.New("engine: Options.DataDir is required")
	}
	e := &Engine{
		opts:    opts,
		fs:      opts.FS,
		snapDir: filepath.Join(opts.DataDir, "member", "snap"),
		log:     opts.Logger,
		members: make(map[uint64]*Member),
		removed: make(map[uint64]bool),
	}
	e.dbPath = filepath.Join(e.snapDir, "db")
	if opts.DBPath != "" {
		e.dbPath = opts.DBPath
		if err := os.MkdirAll(filepath.Dir(e.dbPath), 0o700); err != nil {
			return nil, fmt.Errorf("engine: create %s: %w", filepath.Dir(e.dbPath), err)
		}
	}
	for _, d := range []string{opts.DataDir, filepath.Join(opts.DataDir, "member"), e.snapDir} {
		// As etcd's TouchDirAll: a directory that exists with other
		// permissions than 0700 is used, with a warning (others may read
		// the data: users' password hashes among it).
		if fi, err := e.fs.Stat(d); err == nil && fi.IsDir() && fi.Mode().Perm() != 0o700 {
			e.log.Warn("check file permission", "error", fmt.Sprintf(
				"directory %q exist, but the permission is %q. The recommended permission is %q to prevent possible unprivileged access to the data",
				d, fi.Mode(), fs.FileMode(0o700)))
		}
		if err := e.fs.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("engine: create %s: %w", d, err)
		}
	}
	if err := e.removeTempFiles(); err != nil {
		return nil, err
	}
	var err error
	if wal.Exist(e.fs, opts.WALDir) {
		err = e.openExisting()
	} else {
		if opts.ForceNewCluster {
			e.log.Warn("--force-new-cluster has no effect: the member has no WAL yet", "wal-dir", opts.WALDir)
		}
		err = e.bootstrap()
	}
	if err != nil {
		e.closeAll()
		return nil, err
	}
	return e, nil
}

// removeTempFiles deletes snap/tmp* (unfinished .snap writes) and
// snap/db.tmp* (a defrag cut short) as etcd does at boot.
func (e *Engine) removeTempFiles() error {
	names, err := e.fs.ReadDirNames(e.snapDir)
	if err != nil {
		return fmt.Errorf("engine: list %s: %w", e.snapDir, err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, "tmp") || strings.HasPrefix(n, "db.tmp") {
			p := filepath.Join(e.snapDir, n)
			if err := e.fs.Remove(p); err != nil {
				return fmt.Errorf("engine: remove %s: %w", p, err)
			}
		}
	}
	return nil
}

func (e *Engine) walOptions() wal.Options {
	return wal.Options{FS: e.fs, NoSync: e.opts.NoSync, SegmentSize: e.opts.WALSegmentSize, OnSync: e.opts.OnWALSync}
}

// bootstrap creates a new member of a new cluster: the WAL with its
// metadata, the bootstrap conf-change entries (the package doc, "Bootstrap
// entries") and HardState {term 1, commit n}, and the db with etcd's
// buckets. The members bucket is filled when the conf changes are applied,
// as etcd does.
func (e *Engine) bootstrap() error {
	o := e.opts
	if o.Name == "" {
		return errors.New("engine: bootstrap: Options.Name is required")
	}
	members, cid, err := InitialMembers(o.InitialCluster, o.InitialClusterToken)
	if err != nil {
		return err
	}
	var self *Member
	for i := range members {
		if members[i].Name == o.Name {
			self = &members[i]
		}
	}
	if self == nil {
		return fmt.Errorf("engine: bootstrap: member %q is not in --initial-cluster %q", o.Name, o.InitialCluster)
	}
	if o.Join != nil {
		// The cluster's IDs, and no bootstrap entries: the leader sends
		// the membership with the log.
		self = &Member{ID: o.Join.MemberID, PeerURLs: self.PeerURLs, Name: self.Name}
		cid, members = o.Join.ClusterID, nil
	}
	if len(o.InitialAdvertisePeerURLs) > 0 {
		adv := slices.Clone(o.InitialAdvertisePeerURLs)
		slices.Sort(adv)
		if !slices.Equal(adv, self.PeerURLs) {
			return fmt.Errorf("engine: bootstrap: --initial-advertise-peer-urls %v do not match %s's URLs %v in --initial-cluster",
				o.InitialAdvertisePeerURLs, o.Name, self.PeerURLs)
		}
	}
	if err := e.fs.MkdirAll(filepath.Dir(o.WALDir), 0o700); err != nil {
		return fmt.Errorf("engine: create %s: %w", filepath.Dir(o.WALDir), err)
	}
	e.id, e.clusterID = self.ID, cid
	e.bootstrapped = true

	if e.store, err = mvcc.Open(e.dbPath, e.opts.MVCC); err != nil {
		return err
	}
	e.storeP.Store(e.store)
	if err := e.store.Backend().Write(func(w *mvcc.WriteTx) error {
		for _, b := range mvcc.AllBuckets() {
			w.EnsureBucket(b)
		}
		// etcd's auth store starts at revision 1.
		w.Put([]byte(mvcc.BucketAuth), []byte("authRevision"), binary.BigEndian.AppendUint64(nil, 1))
		return nil
	}); err != nil {
		return err
	}
	if err := e.store.Commit(); err != nil {
		return err
	}
	if err := e.openAuth(); err != nil {
		return err
	}

	ents, err := BootstrapEntries(members)
	if err != nil {
		return err
	}
	md := MarshalMetadata(e.id, e.clusterID)
	if e.w, err = wal.Create(o.WALDir, md, e.walOptions()); err != nil {
		return err
	}
	// Make the new directories durable: the WAL's rename into place and
	// member/, snap/ themselves (etcd leaves these to the filesystem).
	if !o.NoSync {
		for _, d := range []string{e.snapDir, filepath.Dir(o.WALDir)} {
			if err := e.syncDirUp(d); err != nil {
				return err
			}
		}
	}
	hs := &raftpb.HardState{Term: proto.Uint64(1), Vote: proto.Uint64(0), Commit: proto.Uint64(uint64(len(ents)))}
	if o.Join != nil {
		hs = &raftpb.HardState{} // etcd's joining member starts raft with no peers and no state
	}
	if err := e.w.Save(hs, ents); err != nil {
		return err
	}
	e.rs = raft.NewMemoryStorage()
	if err := e.rs.SetHardState(hs); err != nil {
		return err
	}
	if err := e.rs.Append(ents); err != nil {
		return err
	}
	e.term, e.commitIndex = hs.GetTerm(), hs.GetCommit()
	e.confState = &raftpb.ConfState{}
	e.log.Info("bootstrapped new member", "name", o.Name, "member-id", fmt.Sprintf("%x", e.id),
		"cluster-id", fmt.Sprintf("%x", e.clusterID), "data-dir", o.DataDir, "wal-dir", o.WALDir)
	return nil
}

// syncDirUp fsyncs dir and every ancestor, so directories just created by
// MkdirAll survive a power loss. Failures more than three levels up (a
// directory the user may not be allowed to open) are ignored.
func (e *Engine) syncDirUp(dir string) error {
	for level, d := 0, filepath.Clean(dir); ; level, d = level+1, filepath.Dir(d) {
		if err := e.fs.SyncDir(d); err != nil && level < 3 {
			return fmt.Errorf("engine: sync directory %s: %w", d, err)
		}
		if p := filepath.Dir(d); p == d {
			return nil
		}
	}
}

// BootstrapEntries returns the conf-change entries raft's bootstrap appends
// for the initial members (sorted by ID): term 1, index 1..n, ConfChange{ID
// 0, AddNode, NodeID, member JSON}.
func BootstrapEntries(members []Member) ([]*raftpb.Entry, error) {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	ents := make([]*raftpb.Entry, 0, len(ms))
	for i, m := range ms {
		typ := raftpb.ConfChangeAddNode
		if m.IsLearner {
			typ = raftpb.ConfChangeAddLearnerNode
		}
		cc := &raftpb.ConfChange{Id: proto.Uint64(0), Type: &typ, NodeId: proto.Uint64(m.ID), Context: marshalMember(m)}
		data, err := proto.Marshal(cc)
		if err != nil {
			return nil, fmt.Errorf("engine: marshal conf change: %w", err)
		}
		et := raftpb.EntryConfChange
		ents = append(ents, &raftpb.Entry{Term: proto.Uint64(1), Index: proto.Uint64(uint64(i + 1)), Type: &et, Data: data})
	}
	return ents, nil
}

// MarshalMetadata returns the WAL metadata etcd writes:
// etcdserverpb.Metadata{NodeID, ClusterID}.
func MarshalMetadata(nodeID, clusterID uint64) []byte {
	b, _ := proto.Marshal(&pb.Metadata{NodeID: proto.Uint64(nodeID), ClusterID: proto.Uint64(clusterID)})
	return b
}

// openExisting opens a member that has a WAL (the package doc, "Boot").
func (e *Engine) openExisting() error {
	o := e.opts
	valid, err := wal.ValidSnapshotEntries(o.WALDir, e.walOptions())
	if err != nil {
		return err
	}
	points := make([]snap.Point, 0, len(valid))
	for _, s := range valid {
		points = append(points, snap.Point{Term: s.Term, Index: s.Index})
	}
	var snapshot *raftpb.Snapshot
	s, p, skipped, err := snap.LoadNewest(e.fs, e.snapDir, points)
	for _, serr := range skipped {
		e.log.Warn("skipped a snapshot file that failed to load", "error", serr)
		var ce *corrupt.Error
		if errors.As(serr, &ce) && ce.Path != "" {
			if qerr := snap.Quarantine(e.fs, ce.Path); qerr != nil {
				e.log.Warn("could not quarantine snapshot", "path", ce.Path, "error", qerr)
			}
		}
	}
	switch {
	case err == nil:
		snapshot = s
		e.log.Info("loaded snapshot", "term", p.Term, "index", p.Index)
	case errors.Is(err, snap.ErrNoSnapshot):
	default:
		return err
	}
	walSnap := wal.Snapshot{}
	if snapshot != nil {
		md := snapshot.GetMetadata()
		walSnap = wal.Snapshot{Index: md.GetIndex(), Term: md.GetTerm(), ConfState: md.GetConfState()}
		if err := e.maybeReplaceDB(md.GetIndex()); err != nil {
			return err
		}
	}
	if e.store, err = mvcc.Open(e.dbPath, e.opts.MVCC); err != nil {
		return err
	}
	e.storeP.Store(e.store)
	if e.ci, _, err = e.store.ConsistentIndex(); err != nil {
		return err
	}
	if err := e.openAuth(); err != nil {
		return err
	}

	md, hs, ents, err := e.readWAL(walSnap)
	if err != nil {
		return err
	}
	var meta pb.Metadata
	if err := proto.Unmarshal(md, &meta); err != nil {
		return corrupt.New(o.WALDir, 0, corrupt.Damaged, "WAL metadata is not etcdserverpb.Metadata", err)
	}
	e.id, e.clusterID = meta.GetNodeID(), meta.GetClusterID()
	if e.id == 0 {
		return corrupt.New(o.WALDir, 0, corrupt.Damaged, "WAL metadata has no NodeID", nil)
	}
	if o.ForceNewCluster {
		// etcd v3.7 reads the members from the WAL's snapshot record (the
		// .snap of the same point carries the same ConfState).
		cs := walSnap.ConfState
		for _, v := range valid {
			if v.Index == walSnap.Index && v.Term == walSnap.Term && v.ConfState != nil {
				cs = v.ConfState
			}
		}
		if hs, ents, err = e.forceNewCluster(cs, walSnap.Index, hs, ents); err != nil {
			return err
		}
	}

	e.rs = raft.NewMemoryStorage()
	e.confState = &raftpb.ConfState{}
	if snapshot != nil {
		if err := e.rs.ApplySnapshot(snapshot); err != nil {
			return fmt.Errorf("engine: apply snapshot %s: %w", p, err)
		}
		e.confState = proto.Clone(snapshot.GetMetadata().GetConfState()).(*raftpb.ConfState)
		e.appliedIndex = snapshot.GetMetadata().GetIndex()
		e.appliedTerm = snapshot.GetMetadata().GetTerm()
		e.snapshotIndex = e.appliedIndex
	}
	if hs != nil {
		if err := e.rs.SetHardState(hs); err != nil {
			return err
		}
		e.term, e.commitIndex = hs.GetTerm(), hs.GetCommit()
	}
	if err := e.rs.Append(ents); err != nil {
		return fmt.Errorf("engine: %s: append WAL entries: %w", o.WALDir, err)
	}
	if e.ci > e.commitIndex && e.commitIndex > 0 {
		e.log.Warn("db consistent_index is ahead of the WAL commit", "consistent-index", e.ci, "commit", e.commitIndex)
	}
	if err := e.loadMembership(snapshot); err != nil {
		return err
	}
	if e.downgrade.Enabled {
		e.log.Info("cluster is downgrading to target version", "target-cluster-version", e.downgrade.TargetVersion, "current-server-version", ServerVersion.String())
	}
	if err := e.detectDowngrade(e.clusterVersion); err != nil {
		return err
	}
	e.log.Info("opened member", "member-id", fmt.Sprintf("%x", e.id), "cluster-id", fmt.Sprintf("%x", e.clusterID),
		"consistent-index", e.ci, "commit", e.commitIndex, "entries", len(ents), "revision", e.store.Rev())
	return nil
}

// readWAL opens the WAL for writing at snap and reads it, repairing a torn
// tail once.
func (e *Engine) readWAL(at wal.Snapshot) ([]byte, *raftpb.HardState, []*raftpb.Entry, error) {
	for attempt := 0; ; attempt++ {
		w, err := wal.Open(e.opts.WALDir, at, e.walOptions())
		if err != nil {
			return nil, nil, nil, err
		}
		md, hs, ents, err := w.ReadAll()
		if err == nil {
			e.w = w
			return md, hs, ents, nil
		}
		_ = w.Close()
		if attempt > 0 || !errors.Is(err, corrupt.ErrTornTail) {
			return nil, nil, nil, err
		}
		rep, rerr := wal.Repair(e.opts.WALDir, e.walOptions())
		if rerr != nil {
			return nil, nil, nil, fmt.Errorf("engine: repair after %v: %w", err, rerr)
		}
		e.log.Warn("repaired torn WAL tail", "report", rep.String())
	}
}

// maybeReplaceDB makes sure the db is at least as new as the snapshot at
// index, as etcd's RecoverSnapshotBackend does. A db older than the snapshot
// is replaced by snap/<index>.snap.db (a snapshot received from a leader
// whose apply was cut short). Without that file the member does not start:
// the WAL holds no entries at or below the snapshot, so a db behind it (a
// db copied back from a backup, a db lost and recreated empty) can never be
// brought up to date, and serving from it would give old answers for new
// revisions.
func (e *Engine) maybeReplaceDB(index uint64) error {
	src := filepath.Join(e.snapDir, snap.DBFileName(index))
	haveSrc := true
	if _, err := os.Stat(src); err != nil {
		haveSrc = false
	}
	ci, dbState := uint64(0), "does not exist"
	if _, err := os.Stat(e.dbPath); err == nil {
		db, err := bolt.Open(e.dbPath, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			return fmt.Errorf("engine: open %s: %w", e.dbPath, err)
		}
		err = db.View(func(tx *bolt.Tx) error {
			ci, _, err = mvcc.ReadConsistentIndex(tx)
			return err
		})
		_ = db.Close()
		if err != nil {
			// A damaged index is not read as 0: the snapshot db would
			// replace a db that may be newer.
			return fmt.Errorf("engine: %s: %w", e.dbPath, err)
		}
		dbState = fmt.Sprintf("has consistent index %d", ci)
	}
	if ci >= index {
		return nil
	}
	if !haveSrc {
		// etcd's words first: operators and etcd's own tests look for them.
		return fmt.Errorf("engine: failed to find database snapshot file (snap: snapshot file doesn't exist): "+
			"the snapshot is at index %d, but %s %s and %s does not exist; "+
			"the db is not the one this member's WAL and snapshots were written with",
			index, e.dbPath, dbState, src)
	}
	if err := os.Rename(src, e.dbPath); err != nil {
		return fmt.Errorf("engine: replace db by %s: %w", src, err)
	}
	e.log.Info("replaced db by newer snapshot db", "from", src, "db-consistent-index", ci, "snapshot-index", index)
	return nil
}

// loadMembership reads the members, members_removed, cluster and alarm
// buckets (etcd v3.6), falling back to the v2 store of the snapshot for a
// db without members (etcd v3.5).
func (e *Engine) loadMembership(snapshot *raftpb.Snapshot) error {
	if err := e.store.Commit(); err != nil {
		return err
	}
	v := e.store.Backend().Snapshot()
	defer v.Release()
	tx := v.Tx()
	// Read into locals, then publish under e.mu: the version monitor and
	// the API read these while a received snapshot is being applied.
	members, removed := map[uint64]*Member{}, map[uint64]bool{}
	var (
		clusterVersion string
		downgrade      DowngradeInfo
		alarms         []*pb.AlarmMember
	)
	if b := tx.Bucket([]byte(mvcc.BucketMembers)); b != nil {
		if err := b.ForEach(func(k, val []byte) error {
			var m Member
			if err := json.Unmarshal(val, &m); err != nil {
				return corrupt.New(e.dbPath, 0, corrupt.Damaged, fmt.Sprintf("members/%s is not member JSON", k), err)
			}
			members[m.ID] = &m
			return nil
		}); err != nil {
			return err
		}
	}
	if b := tx.Bucket([]byte(mvcc.BucketMembersRemoved)); b != nil {
		_ = b.ForEach(func(k, _ []byte) error {
			var id uint64
			if _, err := fmt.Sscanf(string(k), "%x", &id); err == nil {
				removed[id] = true
			}
			return nil
		})
	}
	if b := tx.Bucket([]byte(mvcc.BucketCluster)); b != nil {
		clusterVersion = string(b.Get([]byte("clusterVersion")))
		if val := b.Get([]byte(clusterDowngradeKey)); val != nil {
			d, err := parseDowngradeInfo(val)
			if err != nil {
				return corrupt.New(e.dbPath, 0, corrupt.Damaged, "cluster/downgrade", err)
			}
			downgrade = d
		}
	}
	if b := tx.Bucket([]byte(mvcc.BucketAlarm)); b != nil {
		_ = b.ForEach(func(k, _ []byte) error {
			var am pb.AlarmMember
			if err := proto.Unmarshal(k, &am); err == nil {
				alarms = append(alarms, &am)
			}
			return nil
		})
	}
	if len(members) == 0 && snapshot != nil && len(snapshot.GetData()) > 0 {
		st, err := snap.DecodeV2Store(snapshot.GetData())
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			members[m.ID] = &Member{ID: m.ID, PeerURLs: m.PeerURLs, IsLearner: m.IsLearner, Name: m.Name, ClientURLs: m.ClientURLs}
		}
		for _, id := range st.Removed {
			removed[id] = true
		}
		if clusterVersion == "" {
			clusterVersion = st.Version
		}
	}
	e.mu.Lock()
	e.members, e.removed = members, removed
	e.clusterVersion, e.downgrade, e.alarms = clusterVersion, downgrade, alarms
	e.mu.Unlock()
	return nil
}

// ID is this member's ID; ClusterID the cluster's.
func (e *Engine) ID() uint64        { return e.id }
func (e *Engine) ClusterID() uint64 { return e.clusterID }

// Bootstrapped reports whether Open created this member.
func (e *Engine) Bootstrapped() bool { return e.bootstrapped }

// Store is the MVCC store.
func (e *Engine) Store() *mvcc.Store { return e.storeP.Load() }

// Auth is the member's auth store (users, roles, permission checks,
// tokens).
func (e *Engine) Auth() *auth.Store { return e.auth }

// openAuth loads the auth state of the db just opened.
func (e *Engine) openAuth() error {
	o := e.opts.Auth
	if o.Logger == nil {
		o.Logger = e.log
	}
	a, err := auth.Open(e.store.Backend(), o)
	if err != nil {
		return fmt.Errorf("engine: %s: %w", e.dbPath, err)
	}
	e.auth = a
	return nil
}

// setStore replaces the store (a received snapshot).
func (e *Engine) setStore(st *mvcc.Store) {
	e.store = st
	e.storeP.Store(st)
}

// RaftStorage is the raft log: a raft.MemoryStorage loaded from the newest
// snapshot and the WAL, kept in step by SaveReady.
func (e *Engine) RaftStorage() *raft.MemoryStorage { return e.rs }

// DBPath is member/snap/db.
func (e *Engine) DBPath() string { return e.dbPath }

// Applied returns the index and term of the last applied entry.
func (e *Engine) Applied() (index, term uint64) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.appliedIndex, e.appliedTerm
}

// Term is the last raft term persisted.
func (e *Engine) Term() uint64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.term
}

// CommitIndex is the last commit index persisted.
func (e *Engine) CommitIndex() uint64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.commitIndex
}

// ClusterVersion is the applied cluster version ("" before one is set).
func (e *Engine) ClusterVersion() string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.clusterVersion
}

// Members returns a copy of the members sorted by ID.
func (e *Engine) Members() []Member {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]Member, 0, len(e.members))
	for _, m := range e.members {
		c := *m
		c.PeerURLs = slices.Clone(m.PeerURLs)
		c.ClientURLs = slices.Clone(m.ClientURLs)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// IsLearner reports whether member id is a learner.
func (e *Engine) IsLearner(id uint64) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	m := e.members[id]
	return m != nil && m.IsLearner
}

// IsRemoved reports whether member id was removed from the cluster.
func (e *Engine) IsRemoved(id uint64) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.removed[id]
}

// Member returns the member with id.
func (e *Engine) Member(id uint64) (Member, bool) {
	for _, m := range e.Members() {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

// Alarms returns the active alarms.
func (e *Engine) Alarms() []*pb.AlarmMember {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]*pb.AlarmMember, len(e.alarms))
	for i, a := range e.alarms {
		out[i] = proto.Clone(a).(*pb.AlarmMember)
	}
	return out
}

// ConfState is the current raft configuration.
func (e *Engine) ConfState() *raftpb.ConfState {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return proto.Clone(e.confState).(*raftpb.ConfState)
}

// saveSnap writes a .snap file, timed for Options.OnSnapSave.
func (e *Engine) saveSnap(s *raftpb.Snapshot) error {
	start := time.Now()
	if _, err := snap.Save(e.fs, e.snapDir, s); err != nil {
		return err
	}
	if e.opts.OnSnapSave != nil {
		e.opts.OnSnapSave(time.Since(start))
	}
	return nil
}

// SaveReady persists what a raft Ready asks to persist, in etcd's order: a
// snapshot first (.snap file, then its WAL record), then the entries and
// HardState (the WAL syncs when raft requires it), then the in-memory log.
func (e *Engine) SaveReady(hs *raftpb.HardState, ents []*raftpb.Entry, snapshot *raftpb.Snapshot) error {
	hasSnap := snapshot != nil && !raft.IsEmptySnap(snapshot)
	if hasSnap {
		if err := e.saveSnap(snapshot); err != nil {
			return err
		}
		md := snapshot.GetMetadata()
		if err := e.w.SaveSnapshot(wal.Snapshot{Index: md.GetIndex(), Term: md.GetTerm(), ConfState: md.GetConfState()}); err != nil {
			return err
		}
	}
	if hs == nil {
		hs = &raftpb.HardState{}
	}
	if err := e.w.Save(hs, ents); err != nil {
		return err
	}
	if hasSnap {
		if err := e.rs.ApplySnapshot(snapshot); err != nil {
			return err
		}
		if err := e.w.ReleaseLockTo(snapshot.GetMetadata().GetIndex()); err != nil {
			return err
		}
	}
	if !raft.IsEmptyHardState(hs) {
		if err := e.rs.SetHardState(hs); err != nil {
			return err
		}
		e.mu.Lock()
		e.term, e.commitIndex = hs.GetTerm(), hs.GetCommit()
		e.mu.Unlock()
	}
	if len(ents) > 0 {
		if err := e.rs.Append(ents); err != nil {
			return fmt.Errorf("engine: append to raft log: %w", err)
		}
	}
	return nil
}

// Close closes the WAL and the store.
func (e *Engine) Close() error {
	return e.closeAll()
}

func (e *Engine) closeAll() error {
	var errs []error
	if e.auth != nil {
		e.auth.Close()
	}
	if e.w != nil {
		errs = append(errs, e.w.Close())
		e.w = nil
	}
	if e.store != nil {
		errs = append(errs, e.store.Close())
		e.store = nil
		e.storeP.Store(nil)
	}
	return errors.Join(errs...)
}

var _ io.Closer = (*Engine)(nil)
