// Command walgen writes the benchmark WAL of interop/etcd36 with etckit's
// wal package: an etcd data directory (member/wal, empty member/snap) whose
// log holds put requests with 1 KiB values, written in batches of 16
// entries with a HardState each (as a member applies them), until the
// given number of segments are full (cut at 64,000,000 bytes). It is a
// module of its own because etckit needs raft 3.7 and etcd-dump-logs 3.6
// needs raft 3.6.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/etckit/etckit/wal"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
)

func main() {
	dataDir := flag.String("data-dir", "", "data directory to create")
	full := flag.Int("full-segments", 1, "number of full segments to write")
	flag.Parse()
	if *dataDir == "" || *full < 1 {
		fmt.Fprintln(os.Stderr, "usage: walgen -data-dir DIR [-full-segments N]")
		os.Exit(2)
	}
	n, err := generate(*dataDir, *full)
	if err != nil {
		fmt.Fprintln(os.Stderr, "walgen:", err)
		os.Exit(1)
	}
	fmt.Println(n)
}

// putRequest encodes etcdserverpb.InternalRaftRequest{header: {ID: id},
// put: {key, value}} (fields 100, 4; RequestHeader.ID = 1; PutRequest key
// = 1, value = 2).
func putRequest(id uint64, key, value []byte) []byte {
	var hdr, put, b []byte
	hdr = protowire.AppendTag(hdr, 1, protowire.VarintType)
	hdr = protowire.AppendVarint(hdr, id)
	put = protowire.AppendTag(put, 1, protowire.BytesType)
	put = protowire.AppendBytes(put, key)
	put = protowire.AppendTag(put, 2, protowire.BytesType)
	put = protowire.AppendBytes(put, value)
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendBytes(b, put)
	b = protowire.AppendTag(b, 100, protowire.BytesType)
	b = protowire.AppendBytes(b, hdr)
	return b
}

// generate writes the log and returns the number of entries.
func generate(dataDir string, full int) (uint64, error) {
	member := filepath.Join(dataDir, "member")
	if err := os.MkdirAll(filepath.Join(member, "snap"), 0o700); err != nil {
		return 0, err
	}
	// etcdserverpb.Metadata{NodeID: 1, ClusterID: 2}
	w, err := wal.Create(filepath.Join(member, "wal"), []byte("\x08\x01\x10\x02"), wal.Options{NoSync: true})
	if err != nil {
		return 0, err
	}
	value := make([]byte, 1024)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	const batch = 16
	term := uint64(2)
	var index uint64
	// 64 MB per segment / ~1.1 KB per entry: bounded well above the need.
	for limit := uint64(full+1) * 100_000; len(w.Segments()) <= full; {
		if index >= limit {
			w.Close()
			return 0, fmt.Errorf("no cut after %d entries", index)
		}
		ents := make([]*raftpb.Entry, batch)
		for j := range ents {
			index++
			idx, tm := index, term
			key := fmt.Appendf(nil, "/bench/key/%08d", index%100_000)
			ents[j] = &raftpb.Entry{Term: &tm, Index: &idx, Data: putRequest(index, key, value)}
		}
		commit := index
		if err := w.Save(&raftpb.HardState{Term: &term, Vote: new(uint64(1)), Commit: &commit}, ents); err != nil {
			w.Close()
			return 0, err
		}
	}
	return index, w.Close()
}
