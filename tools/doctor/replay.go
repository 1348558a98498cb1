package doctor

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"github.com/etckit/etckit/engine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Replay is the state a member reaches at boot, found by applying the
// committed WAL entries past consistent_index to a copy.
type Replay struct {
	Applied         int    // entries applied
	From, To        uint64 // their index range (From > To: none)
	ConsistentIndex uint64
	Revision        int64
	CompactRev      int64
	Keys            int64 // live keys
	Hash            uint32
	Members         []string
}

// copyDir copies the regular files of src into dst (created).
func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// runReplay copies the member (WAL, snap directory) into a temporary
// directory, opens it with the engine (which recovers it exactly as the
// server does) and applies the committed entries past consistent_index.
// The data directory is only read; the copy is removed.
func runReplay(dataDir, walDir, snapDir string) (*Replay, error) {
	tmp, err := os.MkdirTemp("", "etckit-doctor-replay-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if abs, _ := filepath.Abs(dataDir); abs != "" {
		if rel, err := filepath.Rel(abs, tmp); err == nil && filepath.IsLocal(rel) {
			return nil, fmt.Errorf("the temporary directory %s is inside the data directory; set TMPDIR elsewhere", tmp)
		}
	}
	if err := copyDir(walDir, filepath.Join(tmp, "member", "wal")); err != nil {
		return nil, fmt.Errorf("copy the WAL: %w", err)
	}
	if err := copyDir(snapDir, filepath.Join(tmp, "member", "snap")); err != nil {
		return nil, fmt.Errorf("copy the snap directory: %w", err)
	}
	e, err := engine.Open(engine.Options{DataDir: tmp, NoSync: true, MaxSnapshots: -1, MaxWALs: -1, AnyClusterVersion: true})
	if err != nil {
		return nil, err
	}
	defer e.Close()
	ci, _, err := e.Store().ConsistentIndex()
	if err != nil {
		return nil, err
	}
	rs := e.RaftStorage()
	first, _ := rs.FirstIndex()
	commit := e.CommitIndex()
	p := &Replay{From: max(ci+1, first), To: commit}
	if p.From <= p.To {
		ents, err := rs.Entries(p.From, p.To+1, math.MaxUint64)
		if err != nil {
			return nil, fmt.Errorf("entries %d..%d: %w", p.From, p.To, err)
		}
		cc := engine.NewConfTracker(e.ConfState())
		if err := e.Apply(ents, cc.Apply, nil); err != nil {
			return nil, err
		}
		p.Applied = len(ents)
	}
	s := e.Store()
	if err := s.Commit(); err != nil {
		return nil, err
	}
	if p.ConsistentIndex, _, err = s.ConsistentIndex(); err != nil {
		return nil, err
	}
	p.Revision, p.CompactRev = s.Rev(), s.CompactRev()
	h, _, err := s.HashKV(0)
	if err != nil {
		return nil, err
	}
	p.Hash = h.Hash
	resp, err := s.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, CountOnly: true})
	if err != nil {
		return nil, err
	}
	p.Keys = resp.GetCount()
	for _, m := range e.Members() {
		p.Members = append(p.Members, strconv.FormatUint(m.ID, 16))
	}
	return p, nil
}
