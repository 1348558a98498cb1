package mvcc

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etckit/etckit/vfs"
	bolt "go.etcd.io/bbolt"
)

// Bucket names, exactly as etcd spells them (wire format: never change).
const (
	BucketKey            = "key"
	BucketMeta           = "meta"
	BucketLease          = "lease"
	BucketAlarm          = "alarm"
	BucketAuth           = "auth"
	BucketAuthUsers      = "authUsers"
	BucketAuthRoles      = "authRoles"
	BucketCluster        = "cluster"
	BucketMembers        = "members"
	BucketMembersRemoved = "members_removed"
)

// AllBuckets returns etcd's buckets in its schema order.
func AllBuckets() [][]byte {
	return [][]byte{[]byte(BucketKey), []byte(BucketMeta), []byte(BucketLease), []byte(BucketAlarm), []byte(BucketCluster),
		[]byte(BucketMembers), []byte(BucketMembersRemoved), []byte(BucketAuth), []byte(BucketAuthUsers), []byte(BucketAuthRoles)}
}

// Meta keys (wire format: never change).
const (
	MetaConsistentIndex     = "consistent_index"
	MetaTerm                = "term"
	MetaConfState           = "confState"
	MetaScheduledCompactRev = "scheduledCompactRev"
	MetaFinishedCompactRev  = "finishedCompactRev"
	MetaStorageVersion      = "storageVersion"
)

// BackendOptions configures a Backend. The zero value gives etcd's defaults.
type BackendOptions struct {
	// BatchInterval is the longest time a write waits before it is committed
	// (etcd: 100ms).
	BatchInterval time.Duration
	// BatchLimit is the number of pending writes that forces a commit
	// (etcd: 10000).
	BatchLimit int
	// ReadOnly opens the file with a shared lock and refuses writes; for
	// offline tools.
	ReadOnly bool
	// Timeout bounds the wait for the file lock (0: wait forever for a
	// writer, 10s in ReadOnly mode). When it expires the error names the
	// processes that hold the file, where /proc/locks tells.
	Timeout time.Duration
	// InitialMmapSize is bbolt's initial mmap size (etcd: 10 GiB on Linux).
	// 0 uses 10 GiB; negative uses bbolt's default.
	InitialMmapSize int64
	// NoSync skips fsync on commit (tests and benchmarks only).
	NoSync bool
	// OnCommit, when set, is told of each commit of a batch to bbolt (the
	// server's metrics; mvcc knows no metrics library).
	OnCommit func(CommitStats)
}

// CommitStats is one commit's time, with bbolt's rebalance, spill and
// write (fsync included) phases.
type CommitStats struct {
	Total, Rebalance, Spill, Write time.Duration
}

func (o BackendOptions) withDefaults() BackendOptions {
	if o.BatchInterval <= 0 {
		o.BatchInterval = 100 * time.Millisecond
	}
	if o.BatchLimit <= 0 {
		o.BatchLimit = 10000
	}
	if o.Timeout == 0 && o.ReadOnly {
		o.Timeout = 10 * time.Second
	}
	if o.InitialMmapSize == 0 {
		o.InitialMmapSize = 10 << 30
	}
	return o
}

// Backend is etcd's bbolt backend: writes collect in a pending batch that a
// background committer writes to bbolt every BatchInterval or BatchLimit
// writes; reads see the pending batch, the batch being committed and the
// last committed bbolt snapshot, so they never wait for a commit or fsync.
//
// Only the key bucket's puts and point lookups of other buckets are served
// from the pending batches; scans of other buckets (ForEach) see committed
// data only, so callers that scan force a commit first.
type Backend struct {
	path string
	opts BackendOptions
	db   *bolt.DB

	// txMu: writers (Write) hold it exclusively while they add to pending;
	// readers (View) share it while they look at pending, committing and
	// rtx; the committer takes it only to swap pointers.
	txMu       sync.RWMutex
	pending    *batch
	committing *batch
	rtx        *readTx

	commitMu  sync.Mutex // one bbolt write transaction at a time
	commitErr error      // sticky; guarded by commitMu
	mapped    int64      // lower bound of bbolt's mmap size; guarded by commitMu
	pageSize  int64
	kick      chan struct{}
	stopc     chan struct{}
	donec     chan struct{}
	closeOnce sync.Once
	closed    atomic.Bool
	commits   atomic.Int64
}

type op struct {
	bucket string
	key    []byte
	val    []byte
	del    bool
	create bool // only create the bucket
}

type batch struct {
	bytes  int64 // key and value bytes of ops
	minRev int64 // smallest main revision in keyRev (0: none)
	ops    []op
	keyRev map[Revision][]byte // puts into the key bucket by revision
	// other indexes, by bucket+"\x00"+key, the op of ops that holds the
	// last write to each key of the other buckets. A later write to the
	// same key replaces that op in place rather than adding one: only the
	// last write matters at commit (ops on other keys are independent), and
	// the meta bucket's consistent_index and term, written by every applied
	// entry, stay two ops per batch.
	other map[string]int
	kbuf  []byte // scratch for other's lookup keys
}

func newBatch() *batch {
	return &batch{keyRev: make(map[Revision][]byte), other: make(map[string]int)}
}

// setOther adds o, a write to a bucket other than key, or replaces the
// batch's earlier write to the same key.
func (p *batch) setOther(o op) {
	p.kbuf = append(append(append(p.kbuf[:0], o.bucket...), 0), o.key...)
	if i, ok := p.other[string(p.kbuf)]; ok {
		p.bytes -= int64(len(p.ops[i].key) + len(p.ops[i].val))
		p.ops[i] = o
		return
	}
	p.other[string(p.kbuf)] = len(p.ops)
	p.ops = append(p.ops, o)
}

// lookupOther returns the batch's last write to key in bucket.
func (p *batch) lookupOther(bucket, key []byte) (op, bool) {
	var buf [128]byte
	k := append(append(append(buf[:0], bucket...), 0), key...)
	i, ok := p.other[string(k)]
	if !ok {
		return op{}, false
	}
	return p.ops[i], true
}

// bucketName returns bucket as a string, without allocating for the
// buckets etcd defines.
func bucketName(bucket []byte) string {
	// One case per name: returning the constant, not string(bucket),
	// is what avoids the allocation.
	switch string(bucket) {
	case BucketKey:
		return BucketKey
	case BucketMeta:
		return BucketMeta
	case BucketLease:
		return BucketLease
	case BucketAlarm:
		return BucketAlarm
	case BucketCluster:
		return BucketCluster
	case BucketMembers:
		return BucketMembers
	case BucketMembersRemoved:
		return BucketMembersRemoved
	case BucketAuth:
		return BucketAuth
	case BucketAuthUsers:
		return BucketAuthUsers
	case BucketAuthRoles:
		return BucketAuthRoles
	}
	return string(bucket)
}

type readTx struct {
	tx   *bolt.Tx
	key  *bolt.Bucket // the key bucket, looked up once per snapshot
	refs atomic.Int64
	done chan struct{} // closed after the rollback
}

func (r *readTx) release() {
	if r.refs.Add(-1) == 0 {
		_ = r.tx.Rollback()
		close(r.done)
	}
}

// OpenBackend opens (creating if needed, unless ReadOnly) the bbolt file at
// path.
func OpenBackend(path string, opts BackendOptions) (*Backend, error) {
	opts = opts.withDefaults()
	bo := &bolt.Options{
		Timeout:        opts.Timeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		ReadOnly:       opts.ReadOnly,
		NoSync:         opts.NoSync,
		MmapFlags:      boltMmapFlags,
	}
	if opts.InitialMmapSize > 0 {
		bo.InitialMmapSize = int(opts.InitialMmapSize)
	}
	if opts.ReadOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("mvcc: open %s read-only: %w", path, err)
		}
	}
	db, err := bolt.Open(path, 0o600, bo)
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, &LockedError{Path: path, Timeout: opts.Timeout, Holders: vfs.LockHolderNames(path), Err: err}
		}
		return nil, fmt.Errorf("mvcc: open %s: %w", path, err)
	}
	b := &Backend{
		path:    path,
		opts:    opts,
		db:      db,
		pending: newBatch(),
		kick:    make(chan struct{}, 1),
		stopc:   make(chan struct{}),
		donec:   make(chan struct{}),
	}
	b.pageSize = int64(db.Info().PageSize)
	var fileSize int64
	if fi, err := os.Stat(path); err == nil {
		fileSize = fi.Size()
	}
	b.mapped = boltMmapSize(max(fileSize, int64(bo.InitialMmapSize)), b.pageSize)
	if err := b.renewReadTx(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if opts.ReadOnly {
		close(b.donec)
	} else {
		go b.run()
	}
	return b, nil
}

// Path returns the file path.
func (b *Backend) Path() string { return b.path }

// ReadOnly reports whether the backend refuses writes.
func (b *Backend) ReadOnly() bool { return b.opts.ReadOnly }

// DB returns the underlying bbolt handle, for tools (size, stats, defrag).
func (b *Backend) DB() *bolt.DB { return b.db }

// Commits returns how many bbolt write transactions the backend committed.
func (b *Backend) Commits() int64 { return b.commits.Load() }

// LockedError says that the db file is locked by another process.
type LockedError struct {
	Path    string
	Timeout time.Duration
	Holders []string // "pid 1234 (etcd) holds a FLOCK WRITE lock" for each holder (vfs.LockHolders)
	Err     error
}

func (e *LockedError) Error() string {
	who := "unknown process (no entry in /proc/locks)"
	if len(e.Holders) > 0 {
		who = strings.Join(e.Holders, ", ")
	}
	return fmt.Sprintf("mvcc: %s is locked by %s; gave up after %v: %v", e.Path, who, e.Timeout, e.Err)
}

func (e *LockedError) Unwrap() error { return e.Err }

func (b *Backend) renewReadTx() error {
	tx, err := b.db.Begin(false)
	if err != nil {
		return fmt.Errorf("mvcc: %s: begin read tx: %w", b.path, err)
	}
	r := &readTx{tx: tx, key: tx.Bucket([]byte(BucketKey)), done: make(chan struct{})}
	r.refs.Store(1)
	old := b.rtx
	b.rtx = r
	if old != nil {
		old.release()
	}
	return nil
}

func (b *Backend) run() {
	defer close(b.donec)
	t := time.NewTicker(b.opts.BatchInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-b.kick:
		case <-b.stopc:
			return
		}
		_ = b.commit(false)
	}
}

// ForceCommit writes the pending batch to bbolt now.
func (b *Backend) ForceCommit() error {
	if b.opts.ReadOnly {
		return nil
	}
	return b.commit(true)
}

func (b *Backend) commit(force bool) error {
	b.commitMu.Lock()
	defer b.commitMu.Unlock()
	if b.commitErr != nil {
		return b.commitErr
	}
	b.txMu.Lock()
	p := b.pending
	if len(p.ops) == 0 {
		b.txMu.Unlock()
		return nil
	}
	b.committing = p
	b.pending = newBatch()
	// bbolt remaps the file when a commit grows it past the mapping, and a
	// remap waits until no read transaction is open. If this commit may
	// grow past the mapping, readers wait for it (holding txMu) and every
	// open snapshot is drained first; otherwise readers go on on the last
	// snapshot while bbolt commits and syncs.
	growth := int64(len(p.ops))*8*b.pageSize + 2*p.bytes + 1<<20
	remap := b.rtx.tx.Size()+growth >= b.mapped
	if remap {
		old := b.rtx
		b.rtx = nil
		old.release()
		<-old.done
	} else {
		b.txMu.Unlock()
	}

	var start time.Time
	var before bolt.TxStats
	if b.opts.OnCommit != nil {
		start, before = time.Now(), b.db.Stats().TxStats
	}
	err := b.db.Update(func(tx *bolt.Tx) error {
		var cur string
		var bk *bolt.Bucket
		for i := range p.ops {
			o := &p.ops[i]
			if bk == nil || o.bucket != cur {
				cur = o.bucket
				bk = tx.Bucket([]byte(cur))
				if bk == nil {
					var err error
					if bk, err = tx.CreateBucketIfNotExists([]byte(cur)); err != nil {
						return fmt.Errorf("create bucket %q: %w", cur, err)
					}
				}
				if cur == "key" {
					bk.FillPercent = 0.9
				}
			}
			var err error
			if o.create {
				continue
			}
			if o.del {
				err = bk.Delete(o.key)
			} else {
				err = bk.Put(o.key, o.val)
			}
			if err != nil {
				return fmt.Errorf("bucket %q key %x: %w", cur, o.key, err)
			}
		}
		return nil
	})
	b.commits.Add(1)
	if b.opts.OnCommit != nil && err == nil {
		after := b.db.Stats().TxStats
		b.opts.OnCommit(CommitStats{Total: time.Since(start),
			Rebalance: after.GetRebalanceTime() - before.GetRebalanceTime(),
			Spill:     after.GetSpillTime() - before.GetSpillTime(),
			Write:     after.GetWriteTime() - before.GetWriteTime()})
	}
	if !remap {
		b.txMu.Lock()
	}
	if err == nil {
		err = b.renewReadTx()
	} else if b.rtx == nil {
		// keep readers working on the last committed state
		if rerr := b.renewReadTx(); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	if b.rtx != nil {
		b.mapped = max(b.mapped, boltMmapSize(b.rtx.tx.Size(), b.pageSize))
	}
	if err != nil {
		err = fmt.Errorf("mvcc: %s: commit: %w", b.path, err)
		b.commitErr = err
	} else {
		b.committing = nil
	}
	b.txMu.Unlock()
	return err
}

// WriteTx adds operations to the pending batch. It is valid only inside the
// function given to Backend.Write.
type WriteTx struct {
	b *Backend
	p *batch
}

// Write runs fn with exclusive access to the pending batch. Writes become
// durable at the next commit.
func (b *Backend) Write(fn func(w *WriteTx) error) error {
	if b.opts.ReadOnly {
		return ErrReadOnly
	}
	if b.closed.Load() {
		return ErrClosed
	}
	b.txMu.Lock()
	w := WriteTx{b: b, p: b.pending}
	err := fn(&w)
	n := len(w.p.ops)
	b.txMu.Unlock()
	if n >= b.opts.BatchLimit {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
	return err
}

// Put stores key=val in bucket (created if missing at commit).
func (w *WriteTx) Put(bucket, key, val []byte) {
	o := op{bucket: bucketName(bucket), key: key, val: val}
	w.p.bytes += int64(len(key) + len(val))
	if o.bucket == "key" {
		w.p.ops = append(w.p.ops, o)
		return
	}
	w.p.setOther(o)
}

// putRev stores a key-bucket entry.
func (w *WriteTx) putRev(r Revision, tomb bool, val []byte) {
	k := RevKey(r, tomb)
	w.p.ops = append(w.p.ops, op{bucket: "key", key: k, val: val})
	w.p.bytes += int64(len(k) + len(val))
	if !tomb {
		w.p.keyRev[r] = val
		if w.p.minRev == 0 || r.Main < w.p.minRev {
			w.p.minRev = r.Main
		}
	}
}

// Delete removes key from bucket.
func (w *WriteTx) Delete(bucket, key []byte) {
	o := op{bucket: bucketName(bucket), key: key, del: true}
	w.p.bytes += int64(len(key))
	if o.bucket == "key" {
		w.p.ops = append(w.p.ops, o)
		return
	}
	w.p.setOther(o)
}

// View returns a read view for use inside the write function: it sees the
// writes made so far. It must not be used after the write function returns.
func (w *WriteTx) View() *View {
	return &View{b: w.b, pending: w.p, committing: w.b.committing, rtx: w.b.rtx, borrowed: true}
}

// Pending returns the number of operations waiting for the next commit.
func (w *WriteTx) Pending() int { return len(w.p.ops) }

// View is a consistent read view: the pending and committing batches and
// the last committed snapshot. Release it when done.
type View struct {
	b          *Backend
	pending    *batch
	committing *batch
	rtx        *readTx
	locked     bool // holds b.txMu.RLock
	borrowed   bool // inside a write: no lock, no reference
}

// View returns a read view that includes uncommitted writes. While it is
// held, writers wait; release it promptly. Use Snapshot for long scans.
func (b *Backend) View() *View {
	b.txMu.RLock()
	v := &View{b: b, pending: b.pending, committing: b.committing, rtx: b.rtx, locked: true}
	return v
}

// Snapshot returns a view of the last committed state only; it does not
// block writers and may be held for long scans.
func (b *Backend) Snapshot() *View {
	b.txMu.RLock()
	r := b.rtx
	r.refs.Add(1)
	b.txMu.RUnlock()
	return &View{b: b, rtx: r}
}

// Release ends the view.
func (v *View) Release() {
	if v.borrowed {
		return
	}
	if v.locked {
		v.locked = false
		v.b.txMu.RUnlock()
		return
	}
	if v.rtx != nil {
		v.rtx.release()
		v.rtx = nil
	}
}

// Tx returns the committed bbolt snapshot under the view.
func (v *View) Tx() *bolt.Tx { return v.rtx.tx }

// KeyBucket returns the key bucket of the committed snapshot (nil if
// missing).
func (v *View) KeyBucket() *bolt.Bucket { return v.rtx.key }

// revValue returns the stored value of a put at r.
func (v *View) revValue(r Revision, key []byte) ([]byte, bool) {
	for _, p := range [2]*batch{v.pending, v.committing} {
		if p != nil && p.minRev != 0 && r.Main >= p.minRev {
			if val, ok := p.keyRev[r]; ok {
				return val, true
			}
		}
	}
	bk := v.rtx.key
	if bk == nil {
		return nil, false
	}
	val := bk.Get(key)
	return val, val != nil
}

// Get returns the value of key in bucket, pending writes included.
func (v *View) Get(bucket, key []byte) ([]byte, bool) {
	if string(bucket) == "key" {
		r, tomb, err := ParseRevKey(key)
		if err == nil && !tomb {
			return v.revValue(r, key)
		}
	} else {
		for _, p := range []*batch{v.pending, v.committing} {
			if p == nil {
				continue
			}
			if o, ok := p.lookupOther(bucket, key); ok {
				if o.del {
					return nil, false
				}
				return o.val, true
			}
		}
	}
	bk := v.rtx.tx.Bucket(bucket)
	if bk == nil {
		return nil, false
	}
	val := bk.Get(key)
	return val, val != nil
}

// Close commits what is pending and closes the file.
func (b *Backend) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		if !b.opts.ReadOnly {
			close(b.stopc)
			<-b.donec
			err = b.commit(true)
		}
		b.txMu.Lock()
		if b.rtx != nil {
			b.rtx.release()
			b.rtx = nil
		}
		b.txMu.Unlock()
		if cerr := b.db.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("mvcc: close %s: %w", b.path, cerr)
		}
	})
	return err
}

// boltMmapSize is bbolt's mmap sizing policy (db.mmapSize): powers of two
// from 32 KiB to 1 GiB, then whole GiBs.
func boltMmapSize(size, pageSize int64) int64 {
	for i := uint(15); i <= 30; i++ {
		if size <= 1<<i {
			return 1 << i
		}
	}
	const step = 1 << 30
	if r := size % step; r > 0 {
		size += step - r
	}
	if pageSize > 0 && size%pageSize != 0 {
		size = (size/pageSize + 1) * pageSize
	}
	return size
}
