package doctor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/etckit/etckit/auth"
	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/snap"
	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/tools/dumpdb"
	"github.com/etckit/etckit/tools/walverify"
	"github.com/etckit/etckit/vfs"
	"github.com/etckit/etckit/wal"
	bolt "go.etcd.io/bbolt"
)

// Options configures Diagnose.
type Options struct {
	Timeout  time.Duration // bbolt lock wait (0: forever)
	Replay   bool          // apply committed entries past consistent_index on a copy
	Progress io.Writer     // progress bar (drawn only on a terminal); nil: none
	// FS holds the WAL and the .snap files (default vfs.OS{}); bbolt reads
	// the db on disk.
	FS vfs.FS
}

type doc struct {
	r        *Report
	opts     Options
	confIDs  []string // voters and learners of meta/confState, hex
	removed  map[string]bool
	haveWAL  bool
	walCheck *walverify.Report
}

func (d *doc) add(sev, check, file string, off int64, format string, args ...any) {
	d.r.Findings = append(d.r.Findings, Finding{Severity: sev, Check: check, File: file, Offset: off, Detail: fmt.Sprintf(format, args...)})
}

// Diagnose runs every check on the member in dirs. Its error is non-nil only
// for usage errors and a db locked past the timeout; everything else is a
// finding.
func Diagnose(dirs cli.Dirs, opts Options) (*Report, error) {
	walDir, err := dirs.Wal()
	if err != nil {
		return nil, err
	}
	if opts.FS == nil {
		opts.FS = vfs.OS{}
	}
	if fi, err := opts.FS.Stat(dirs.DataDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("data directory %s: not a directory (%v)", dirs.DataDir, err)
	}
	r := &Report{WALDir: walDir, SnapDir: dirs.Snap(), DBPath: dirs.DB(), Revision: 1, CompactRev: -1}
	d := &doc{r: r, opts: opts, removed: map[string]bool{}}
	d.checkWAL()
	d.checkSnap()
	db, err := dumpdb.OpenDBWithProgress(r.DBPath, opts.Timeout, opts.Progress)
	var pagesErr *dumpdb.PagesError
	switch {
	case err == nil:
		if probs, err := dumpdb.MetaProblems(r.DBPath); err == nil {
			for _, p := range probs {
				d.add(SevError, "bbolt-meta", r.DBPath, p.Offset, "page %d: %s", p.Page, p.Detail)
			}
		}
		d.checkDB(db)
		db.Close()
		d.cross()
	case errors.Is(err, os.ErrNotExist):
		d.add(SevError, "db", r.DBPath, -1, "no db file: %v", err)
	case isLocked(err):
		return nil, err
	case errors.As(err, &pagesErr):
		for _, p := range pagesErr.Problems {
			d.add(SevError, "bbolt-pages", r.DBPath, p.Offset, "page %d: %s (bbolt would crash here; the db was not read further)", p.Page, p.Detail)
		}
	default:
		d.add(SevError, "db", r.DBPath, -1, "cannot open: %v", err)
	}
	if opts.Replay {
		if !d.haveWAL {
			d.add(SevWarn, "replay", walDir, -1, "not replayed: the WAL could not be read")
		} else if p, err := runReplay(dirs.DataDir, walDir, r.SnapDir); err != nil {
			d.add(SevError, "replay", dirs.DataDir, -1, "the engine cannot open or apply a copy of this member: %v", err)
		} else {
			r.Replay = p
		}
	}
	return r, nil
}

func isLocked(err error) bool {
	return err != nil && regexp.MustCompile(`is locked by`).MatchString(err.Error())
}

var walSev = map[string]string{walverify.SevError: SevError, walverify.SevWarning: SevWarn, walverify.SevInfo: SevInfo}

func (d *doc) checkWAL() {
	r := d.r
	var p *cli.Progress
	starts, total := map[string]int64{}, int64(0)
	if names, err := d.opts.FS.ReadDirNames(r.WALDir); err == nil {
		for _, n := range names {
			if fi, err := d.opts.FS.Stat(filepath.Join(r.WALDir, n)); err == nil && filepath.Ext(n) == ".wal" {
				starts[n] = total
				total += fi.Size()
			}
		}
	}
	if d.opts.Progress != nil {
		p = cli.NewProgress(d.opts.Progress, "doctor: wal", total)
		defer p.Done()
	}
	rep, err := walverify.VerifyWithProgress(d.opts.FS, r.WALDir, r.SnapDir, func(seg string, off int64) { p.Update(starts[seg] + off) })
	if err != nil {
		d.add(SevError, "wal", r.WALDir, -1, "cannot read the WAL: %v", err)
		return
	}
	d.haveWAL = true
	d.walCheck = rep
	for _, f := range rep.Findings {
		d.add(walSev[f.Severity], "wal/"+f.Check, f.File, f.Offset, "%s: %s", f.Class, f.Detail)
	}
	r.HardStateTerm, r.HardStateCommit, r.LastIndex = rep.Term, rep.Commit, rep.LastIndex
	r.NodeID, r.ClusterID = rep.NodeID, rep.ClusterID
	valid, err := wal.ValidSnapshotEntries(r.WALDir, wal.Options{})
	if err != nil {
		// Damaged WAL: fall back to the records verify read.
		for _, s := range rep.SnapshotRecords {
			if s.Index <= rep.MaxCommit {
				valid = append(valid, s)
			}
		}
	}
	for _, s := range valid {
		if s.Index >= r.SnapshotIndex {
			r.SnapshotIndex, r.SnapshotTerm = s.Index, s.Term
		}
	}
}

// checkSnap loads the newest .snap a restarting member would load and reads
// its v2 membership.
func (d *doc) checkSnap() {
	r := d.r
	if r.SnapDir == "" || d.walCheck == nil {
		return
	}
	var pts []snap.Point
	for _, s := range d.walCheck.SnapshotRecords {
		if s.Index > 0 && s.Index <= d.walCheck.MaxCommit {
			pts = append(pts, snap.Point{Term: s.Term, Index: s.Index})
		}
	}
	if len(pts) == 0 {
		return
	}
	s, p, _, err := snap.LoadNewest(d.opts.FS, r.SnapDir, pts)
	if err != nil {
		return // walverify reported missing or broken files
	}
	r.SnapFile = filepath.Join(r.SnapDir, p.FileName())
	if len(s.GetData()) == 0 {
		return
	}
	st, err := snap.DecodeV2Store(s.GetData())
	if err != nil {
		d.add(SevError, "membership", r.SnapFile, -1, "the snapshot's v2 store does not decode: %v", err)
		return
	}
	for _, m := range st.Members {
		r.SnapMembers = append(r.SnapMembers, strconv.FormatUint(m.ID, 16))
	}
	slices.Sort(r.SnapMembers)
}

// pageRe finds the page a bbolt check error is about.
var pageRe = regexp.MustCompile(`(?i)page (?:expected to be: )?(\d+)`)

func (d *doc) checkDB(db *bolt.DB) {
	r := d.r
	size := int64(0)
	if fi, err := os.Stat(r.DBPath); err == nil {
		size = fi.Size()
	}
	pageSize := int64(db.Info().PageSize)
	err := func() (err error) {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("bbolt panicked reading the file: %v", p)
			}
		}()
		return db.View(func(tx *bolt.Tx) error {
			d.checkMeta(db, tx, size)
			d.checkMembers(db, tx, size)
			d.checkLeases(db, tx, size)
			d.checkAuth(db, tx, size)
			d.checkKeys(db, tx, size)
			n := 0
			for cerr := range tx.Check() {
				n++
				if n > 100 {
					continue // keep draining
				}
				off := int64(-1)
				if m := pageRe.FindStringSubmatch(cerr.Error()); m != nil {
					if id, err := strconv.ParseInt(m[1], 10, 64); err == nil {
						off = id * pageSize
					}
				}
				d.add(SevError, "bbolt", r.DBPath, off, "bbolt check: %v", cerr)
			}
			if n > 100 {
				d.add(SevError, "bbolt", r.DBPath, -1, "bbolt check: %d more errors not listed", n-100)
			}
			return nil
		})
	}()
	if err != nil {
		d.add(SevError, "bbolt", r.DBPath, -1, "%v", err)
	}
}

func (d *doc) checkMeta(db *bolt.DB, tx *bolt.Tx, size int64) {
	r := d.r
	b := tx.Bucket([]byte(mvcc.BucketMeta))
	if b == nil {
		d.add(SevError, "meta", r.DBPath, -1, "no meta bucket")
		return
	}
	u64 := func(name []byte) (uint64, bool) {
		v := b.Get(name)
		if v == nil {
			return 0, false
		}
		n, err := mvcc.DecodeMetaUint64(string(name), v)
		if err != nil {
			d.add(SevError, "meta", r.DBPath, dumpdb.FileOffset(db, size, v), "%v", err)
			return 0, false
		}
		return n, true
	}
	var ok bool
	if r.ConsistentIndex, ok = u64([]byte(mvcc.MetaConsistentIndex)); !ok {
		d.add(SevWarn, "consistent-index", r.DBPath, -1, "meta/consistent_index is missing: etcd replays the whole WAL into this db")
	}
	r.DBTerm, _ = u64([]byte(mvcc.MetaTerm))
	r.StorageVersion = string(b.Get([]byte(mvcc.MetaStorageVersion)))
	for _, name := range [][]byte{[]byte(mvcc.MetaFinishedCompactRev), []byte(mvcc.MetaScheduledCompactRev)} {
		v := b.Get(name)
		if v == nil {
			continue
		}
		rev, _, err := mvcc.ParseRevKey(v)
		if err != nil {
			d.add(SevError, "meta", r.DBPath, dumpdb.FileOffset(db, size, v), "meta/%s: %v", name, err)
			continue
		}
		if string(name) == mvcc.MetaFinishedCompactRev {
			r.CompactRev = rev.Main
		} else if rev.Main > r.CompactRev {
			d.add(SevInfo, "compaction", r.DBPath, -1, "compaction at %d was scheduled but did not finish; etcd resumes it at boot", rev.Main)
		}
	}
	if v := b.Get([]byte(mvcc.MetaConfState)); v != nil {
		var cs struct {
			Voters   []uint64 `json:"voters"`
			Learners []uint64 `json:"learners"`
		}
		if err := json.Unmarshal(v, &cs); err != nil {
			d.add(SevError, "meta", r.DBPath, dumpdb.FileOffset(db, size, v), "meta/confState is not JSON: %v", err)
		} else {
			for _, id := range append(cs.Voters, cs.Learners...) {
				d.confIDs = append(d.confIDs, strconv.FormatUint(id, 16))
			}
			slices.Sort(d.confIDs)
		}
	}
}

func (d *doc) checkMembers(db *bolt.DB, tx *bolt.Tx, size int64) {
	r := d.r
	if b := tx.Bucket([]byte(mvcc.BucketMembers)); b != nil {
		_ = b.ForEach(func(k, v []byte) error {
			if dec := dumpdb.Decode("members", k, v); dec.Err != nil {
				d.add(SevError, "membership", r.DBPath, dumpdb.PairOffset(db, tx, d.r.DBPath, size, "members", k, v), "members/%q: %v", k, dec.Err)
			}
			r.DBMembers = append(r.DBMembers, string(k))
			return nil
		})
	}
	if b := tx.Bucket([]byte(mvcc.BucketMembersRemoved)); b != nil {
		_ = b.ForEach(func(k, _ []byte) error {
			d.removed[string(k)] = true
			return nil
		})
	}
}

func (d *doc) checkLeases(db *bolt.DB, tx *bolt.Tx, size int64) {
	if b := tx.Bucket([]byte(mvcc.BucketLease)); b != nil {
		_ = b.ForEach(func(k, v []byte) error {
			if dec := dumpdb.Decode("lease", k, v); dec.Err != nil {
				d.add(SevError, "lease", d.r.DBPath, dumpdb.PairOffset(db, tx, d.r.DBPath, size, "lease", k, v), "lease %x: %v", k, dec.Err)
			}
			return nil
		})
	}
}

// checkAuth decodes the auth buckets as etcd loads them at boot, and
// checks that enabled auth has its root user (etcd could not run
// AuthEnable without it; a db edited by hand could).
func (d *doc) checkAuth(db *bolt.DB, tx *bolt.Tx, size int64) {
	bad := false
	for _, bucket := range []string{auth.BucketAuth, auth.BucketAuthUsers, auth.BucketAuthRoles} {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			continue
		}
		_ = b.ForEach(func(k, v []byte) error {
			if dec := dumpdb.Decode(bucket, k, v); dec.Err != nil {
				bad = true
				d.add(SevError, "auth", d.r.DBPath, dumpdb.PairOffset(db, tx, d.r.DBPath, size, bucket, k, v), "%s/%q: %v", bucket, k, dec.Err)
			}
			return nil
		})
	}
	if bad {
		return
	}
	st, err := auth.Load(tx)
	if err != nil {
		d.add(SevError, "auth", d.r.DBPath, -1, "%v", err)
		return
	}
	if !st.Enabled {
		return
	}
	root := st.Users[auth.RootUser]
	if root == nil || !slices.Contains(root.Roles, auth.RootRole) {
		d.add(SevWarn, "auth", d.r.DBPath, -1, "auth is enabled but user %q with role %q is missing: no one can manage users or disable auth", auth.RootUser, auth.RootRole)
	}
}

// checkKeys streams the key bucket: revision keys well formed and strictly
// increasing, values decoding, a put's mod_revision equal to its revision.
func (d *doc) checkKeys(db *bolt.DB, tx *bolt.Tx, size int64) {
	r := d.r
	b := tx.Bucket([]byte(mvcc.BucketKey))
	if b == nil {
		d.add(SevError, "revisions", r.DBPath, -1, "no key bucket")
		return
	}
	var p *cli.Progress
	if d.opts.Progress != nil {
		p = cli.NewProgress(d.opts.Progress, "doctor: db", size)
		defer p.Done()
	}
	var prev mvcc.Revision
	have, bad := false, 0
	var done int64
	report := func(k []byte, format string, args ...any) {
		bad++
		if bad <= 100 {
			d.add(SevError, "revisions", r.DBPath, dumpdb.PairOffset(db, tx, r.DBPath, size, "key", k, nil), "key bucket %x: %s", k, fmt.Sprintf(format, args...))
		}
	}
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		done += int64(len(k) + len(v))
		p.Update(done)
		r.Keys++
		rev, tomb, err := mvcc.ParseRevKey(k)
		if err != nil {
			report(k, "%v", err)
			continue
		}
		if have && !rev.GreaterThan(prev) {
			report(k, "revision %d_%d does not follow %d_%d", rev.Main, rev.Sub, prev.Main, prev.Sub)
		}
		prev, have = rev, true
		r.Revision = max(r.Revision, rev.Main)
		kv, err := mvcc.DecodeKeyValue(v)
		if err != nil {
			report(k, "value does not decode: %v", err)
			continue
		}
		if len(kv.Key) == 0 {
			report(k, "empty user key")
		}
		if !tomb {
			switch {
			case kv.ModRevision != rev.Main:
				report(k, "mod_revision %d differs from the revision %d", kv.ModRevision, rev.Main)
			case kv.CreateRevision <= 0 || kv.CreateRevision > kv.ModRevision:
				report(k, "create_revision %d is not in 1..mod_revision %d", kv.CreateRevision, kv.ModRevision)
			case kv.Version < 1:
				report(k, "version %d < 1", kv.Version)
			}
		}
	}
	if bad > 100 {
		d.add(SevError, "revisions", r.DBPath, -1, "%d more key bucket problems not listed", bad-100)
	}
	if r.CompactRev > r.Revision {
		d.add(SevError, "revisions", r.DBPath, -1, "finishedCompactRev %d is beyond the last revision %d", r.CompactRev, r.Revision)
	}
}

// cross compares the WAL, the .snap and the db.
func (d *doc) cross() {
	r := d.r
	if d.haveWAL {
		switch {
		case r.ConsistentIndex > r.HardStateCommit:
			d.add(SevError, "consistent-index", r.DBPath, -1,
				"consistent_index %d is beyond the WAL's commit %d: the db applied entries the WAL does not hold as committed (lost WAL tail, or a db from another member)", r.ConsistentIndex, r.HardStateCommit)
		case r.ConsistentIndex < r.HardStateCommit:
			d.add(SevInfo, "consistent-index", r.DBPath, -1,
				"%d committed entries (%d..%d) are not applied to the db yet; etcd applies them at boot (--replay shows the result)", r.HardStateCommit-r.ConsistentIndex, r.ConsistentIndex+1, r.HardStateCommit)
		}
		if r.DBTerm > r.HardStateTerm {
			d.add(SevError, "term", r.DBPath, -1, "meta/term %d is beyond the WAL's HardState term %d", r.DBTerm, r.HardStateTerm)
		}
		if r.SnapshotIndex > 0 && r.ConsistentIndex < r.SnapshotIndex {
			sdb := filepath.Join(r.SnapDir, snap.DBFileName(r.SnapshotIndex))
			if _, err := d.opts.FS.Stat(sdb); err == nil {
				d.add(SevInfo, "consistent-index", r.DBPath, -1, "consistent_index %d is older than the WAL snapshot at %d; etcd replaces the db by %s at boot", r.ConsistentIndex, r.SnapshotIndex, sdb)
			} else {
				d.add(SevError, "consistent-index", r.DBPath, -1,
					"consistent_index %d is older than the newest WAL snapshot (index %d) and there is no %s: the entries between are gone from the WAL, etcd refuses to start", r.ConsistentIndex, r.SnapshotIndex, sdb)
			}
		}
		if r.NodeID != 0 && len(r.DBMembers) > 0 {
			id := strconv.FormatUint(r.NodeID, 16)
			if !slices.Contains(r.DBMembers, id) && !d.removed[id] {
				d.add(SevWarn, "membership", r.DBPath, -1, "the WAL's member %s is not in the members bucket", id)
			}
		}
	}
	if r.SnapFile != "" && len(r.DBMembers) > 0 && !slices.Equal(r.SnapMembers, sorted(r.DBMembers)) {
		d.add(SevWarn, "membership", r.SnapFile, -1, "members in the .snap [%s] differ from the members bucket [%s] (the db may be newer: compare with the WAL's conf changes)",
			join(r.SnapMembers), join(sorted(r.DBMembers)))
	}
	if d.confIDs != nil && len(r.DBMembers) > 0 && !slices.Equal(d.confIDs, sorted(r.DBMembers)) {
		d.add(SevWarn, "membership", r.DBPath, -1, "meta/confState [%s] differs from the members bucket [%s]", join(d.confIDs), join(sorted(r.DBMembers)))
	}
}

func sorted(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}
