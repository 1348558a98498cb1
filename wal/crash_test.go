package wal

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/vfs"
)

// crashIterations is the number of crash scenarios in the normal test run.
const crashIterations = 1200

// TestCrashRecovery writes a WAL on the crashable filesystem, cutting small
// segments, and loses power at a random point: after a random number of
// Saves, or when a random write or sync fails (the point where a process
// would stop). Then Repair + ReadAll must return every entry whose Save
// returned, invent nothing, and leave a WAL that takes new entries.
func TestCrashRecovery(t *testing.T) {
	const baseSeed = 20261121
	var st crashStats
	for i := 0; i < crashIterations; i++ {
		seed := uint64(baseSeed + i)
		if err := crashScenario(seed, &st); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
	t.Logf("seeds %d..%d: %d repaired torn tails, %d crashes with several segments, %d unacknowledged entries survived, %d lost",
		baseSeed, baseSeed+crashIterations-1, st.repaired, st.multiSegment, st.survived, st.lost)
	// The scenarios must exercise what they claim to.
	if st.repaired == 0 || st.multiSegment == 0 || st.survived == 0 || st.lost == 0 {
		t.Fatalf("degenerate scenario mix: %+v", st)
	}
}

type crashStats struct{ repaired, multiSegment, survived, lost int }

func crashPayload(index uint64, r *rand.Rand) []byte {
	b := make([]byte, r.IntN(1500))
	for i := range b {
		b[i] = byte(index*31 + uint64(i))
	}
	return b
}

func crashScenario(seed uint64, stats *crashStats) error {
	r := rand.New(rand.NewPCG(seed, 7))
	cfs := vfs.NewCrashable()
	efs := vfs.NewErrorFS(cfs)
	opts := Options{FS: efs, SegmentSize: 4096 + int64(r.IntN(8192))}
	dir := "/data/wal"
	if err := cfs.MkdirAll("/data", 0o700); err != nil {
		return err
	}
	if err := cfs.SyncDir("/"); err != nil {
		return err
	}
	w, err := Create(dir, []byte("crash-meta"), opts)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	switch r.IntN(3) {
	case 0:
		efs.FailNth(vfs.OpSync, 1+r.IntN(40), vfs.ErrInjected)
	case 1:
		// A failed write writes nothing. (A short write that ends inside a
		// sector is outside the fault model, as it is for etcd: segments
		// are preallocated, so a write cannot run out of space, and a
		// failing device fails whole blocks. Such a record has no zero
		// sector and is, by etcd's rule, mid-log corruption.)
		efs.FailNth(vfs.OpWrite, 1+r.IntN(60), vfs.ErrInjected)
	}
	written := map[uint64][]byte{} // every entry handed to Save
	acked := uint64(0)             // highest index whose Save returned nil
	var ackedCommit uint64
	saves := 1 + r.IntN(60)
	next := uint64(1)
	for s := 0; s < saves; s++ {
		n := r.IntN(5)
		var ents []*raftpb.Entry
		for k := 0; k < n; k++ {
			d := crashPayload(next, r)
			written[next] = d
			ents = append(ents, ent(1, next, d))
			next++
		}
		commit := next - 1
		if err := w.Save(hs(1, 1, commit), ents); err != nil {
			break // the process dies here
		}
		acked = next - 1
		ackedCommit = commit
	}
	// Power loss: the WAL is never closed.
	crashed := cfs.CrashWith(vfs.CrashOptions{Seed: int64(seed), KeepProb: 0.5})
	ropts := Options{FS: crashed, SegmentSize: opts.SegmentSize}

	if names, _ := segmentNames(crashed, dir); len(names) > 1 {
		stats.multiSegment++
	}
	ents, st, repaired, err := recoverWAL(dir, ropts)
	if err != nil {
		return err
	}
	if repaired {
		stats.repaired++
	}
	if uint64(len(ents)) > acked {
		stats.survived++
	} else if next-1 > acked {
		stats.lost++
	}
	if uint64(len(ents)) < acked {
		return fmt.Errorf("lost acknowledged entries: recovered %d, acknowledged %d", len(ents), acked)
	}
	for i, e := range ents {
		want, ok := written[e.GetIndex()]
		if e.GetIndex() != uint64(i+1) || !ok || !bytes.Equal(e.Data, want) {
			return fmt.Errorf("entry %d (index %d) was never written like this", i, e.GetIndex())
		}
	}
	if st.GetCommit() > next-1 || (acked > 0 && st.GetCommit() < ackedCommit && len(ents) == 0) {
		return fmt.Errorf("recovered commit %d; acknowledged %d, highest written %d", st.GetCommit(), ackedCommit, next-1)
	}
	// The WAL stays writable: append after what survived and read it back.
	w2, err := Open(dir, Snapshot{}, ropts)
	if err != nil {
		return fmt.Errorf("reopen for append: %w", err)
	}
	if _, _, _, err := w2.ReadAll(); err != nil {
		return fmt.Errorf("reopen for append: %w", err)
	}
	last := uint64(len(ents))
	for k := uint64(1); k <= 3; k++ {
		if err := w2.Save(hs(2, 1, last+k), []*raftpb.Entry{ent(2, last+k, []byte("after"))}); err != nil {
			return fmt.Errorf("append after recovery: %w", err)
		}
	}
	if err := w2.Close(); err != nil {
		return err
	}
	again, _, _, err := recoverWAL(dir, ropts)
	if err != nil {
		return fmt.Errorf("read after append: %w", err)
	}
	if uint64(len(again)) != last+3 || string(again[last+2].Data) != "after" {
		return fmt.Errorf("after append: %d entries, want %d", len(again), last+3)
	}
	return nil
}

// recoverWAL is what a server does at boot: ReadAll, and on a torn tail one
// Repair and a second ReadAll.
func recoverWAL(dir string, opts Options) (ents []*raftpb.Entry, st *raftpb.HardState, repaired bool, err error) {
	for attempt := 0; attempt < 2; attempt++ {
		w, err := Open(dir, Snapshot{}, opts)
		if err != nil {
			return nil, nil, false, fmt.Errorf("open: %w", err)
		}
		_, st, ents, err := w.ReadAll()
		cerr := w.Close()
		if err == nil {
			return ents, st, attempt > 0, cerr
		}
		if !errors.Is(err, corrupt.ErrTornTail) || attempt > 0 {
			return nil, nil, false, fmt.Errorf("read all (attempt %d): %w", attempt, err)
		}
		rep, rerr := Repair(dir, opts)
		if rerr != nil {
			return nil, nil, false, fmt.Errorf("repair: %w", rerr)
		}
		if !rep.Repaired() {
			return nil, nil, false, fmt.Errorf("repair found nothing after %v", err)
		}
	}
	return nil, nil, false, errors.New("unreachable")
}
