package wal_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/wal"
)

// Scan the WAL of a real etcd 3.6.16 member and print the first records
// with their positions.
func ExampleScan() {
	tmp, _ := os.MkdirTemp("", "etckit-example")
	defer os.RemoveAll(tmp)
	root, _ := filepath.Abs("../testdata")
	if err := fixture.ExtractTo(filepath.Join(root, "etcd-3.6.16", "small.tar.gz"), tmp); err != nil {
		fmt.Println(err)
		return
	}
	dir := filepath.Join(tmp, "small", "member", "wal")

	n := 0
	stop := errors.New("enough")
	err := wal.Scan(dir, wal.ScanOptions{}, func(p wal.Position, r wal.Record) error {
		fmt.Printf("%s %s crc=%08x %d bytes\n", p, r.Type, r.CRC, len(r.Data))
		if n++; n == 6 {
			return stop
		}
		return nil
	})
	fmt.Println(err)
	// Output:
	// 0000000000000000-0000000000000000.wal:0 crc crc=00000000 0 bytes
	// 0000000000000000-0000000000000000.wal:16 metadata crc=02de4e0d 20 bytes
	// 0000000000000000-0000000000000000.wal:56 snapshot crc=d1b14607 4 bytes
	// 0000000000000000-0000000000000000.wal:80 entry crc=9930e4f2 105 bytes
	// 0000000000000000-0000000000000000.wal:208 state crc=c051d6a2 6 bytes
	// 0000000000000000-0000000000000000.wal:232 state crc=7be7bbf0 14 bytes
	// enough
}
