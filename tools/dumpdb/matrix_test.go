package dumpdb

// The db part of the corruption matrix (issue 5): whole 4 KiB pages of the
// small fixture's db zeroed, one at a time, chosen by walking the tree (the
// key bucket's branch page and leaves, the root bucket's page, each meta
// page, both meta pages, a free page). Every subcommand must exit 1 naming
// the page and its offset (0 for a free page), and none may panic.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/etckit/etckit/mvcc/boltfile"
	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/tools/tooltest"
)

// safeRun runs dump-db in-process; a panic fails the test.
func safeRun(t *testing.T, args ...string) (r tooltest.Result) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("etckit dump-db %v panicked: %v\n%s", args, p, debug.Stack())
		}
	}()
	return run(t, args...)
}

// dbPages is the tree of a bbolt file, read with plain reads.
type dbPages struct {
	root      uint64   // the root bucket's page (a leaf of bucket names)
	keyRoot   uint64   // the key bucket's root page
	keyBranch bool     // keyRoot is a branch page
	keyLeaves []uint64 // the key bucket's leaf pages, in key order
	hwm       uint64
}

func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }
func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

// readTree finds the key bucket's pages from the newest meta page.
func readTree(t *testing.T, b []byte) dbPages {
	t.Helper()
	const ps = 4096
	var p dbPages
	var txid uint64
	for i := 0; i < 2; i++ {
		m := b[i*ps+16:]
		if le32(m) == 0xED0CDAED && le64(m[48:]) >= txid {
			txid, p.root, p.hwm = le64(m[48:]), le64(m[16:]), le64(m[40:])
		}
	}
	page := func(id uint64) (flags, count uint16, body []byte) {
		pg := b[id*ps : (id+1)*ps]
		return binary.LittleEndian.Uint16(pg[8:]), binary.LittleEndian.Uint16(pg[10:]), pg
	}
	flags, count, pg := page(p.root)
	if flags != boltfile.LeafFlag {
		t.Fatalf("root bucket page %d has flags %#x", p.root, flags)
	}
	for i := 0; i < int(count); i++ {
		e := pg[16+16*i:]
		pos, ks := int(le32(e[4:])), int(le32(e[8:]))
		k := e[pos : pos+ks]
		if string(k) == "key" && le32(e)&boltfile.BucketLeafFlag != 0 {
			p.keyRoot = le64(e[pos+ks:])
		}
	}
	if p.keyRoot == 0 {
		t.Fatal("no key bucket with pages of its own")
	}
	flags, count, pg = page(p.keyRoot)
	switch flags {
	case boltfile.LeafFlag:
		p.keyLeaves = []uint64{p.keyRoot}
	case boltfile.BranchFlag:
		p.keyBranch = true
		for i := 0; i < int(count); i++ {
			p.keyLeaves = append(p.keyLeaves, le64(pg[16+16*i+8:]))
		}
	default:
		t.Fatalf("key bucket root %d has flags %#x", p.keyRoot, flags)
	}
	return p
}

func TestMatrixZeroedPages(t *testing.T) {
	root := extract(t, "small.tar.gz")
	orig, err := os.ReadFile(filepath.Join(root, "small", "member", "snap", "db"))
	if err != nil {
		t.Fatal(err)
	}
	tree := readTree(t, orig)
	if !tree.keyBranch || len(tree.keyLeaves) < 2 {
		t.Fatalf("the key bucket should have a branch page and leaves: %+v", tree)
	}
	used := []uint64{0, 1, tree.root, tree.keyRoot}
	var overflow uint64 // the last overflow page of a key leaf (a large value)
	for _, pg := range tree.keyLeaves {
		used = append(used, pg)
		for i := uint64(1); i <= uint64(le32(orig[pg*4096+12:])); i++ {
			used = append(used, pg+i)
			overflow = pg + i
		}
	}
	if overflow == 0 {
		t.Fatal("no key leaf with overflow pages (the fixture's 10 KB value)")
	}
	free := uint64(0)
	for pg := tree.hwm - 1; pg > 1; pg-- {
		if !slices.Contains(used, pg) {
			free = pg
			break
		}
	}
	if free == 0 {
		t.Fatalf("no free page below the high-water mark %d", tree.hwm)
	}
	t.Logf("root bucket page %d, key bucket branch %d, leaves %v, overflow page %d, free page %d", tree.root, tree.keyRoot, tree.keyLeaves, overflow, free)
	hashkv := func(path string) string {
		r := safeRun(t, "hashkv", path, "--timeout", "1s")
		if r.Code != 0 {
			t.Fatalf("hashkv: exit %d %v", r.Code, r.Err)
		}
		return r.Stdout
	}
	origPath := filepath.Join(t.TempDir(), "db")
	if err := os.WriteFile(origPath, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	origHash := hashkv(origPath)
	last := tree.keyLeaves[len(tree.keyLeaves)-1]
	for _, c := range []struct {
		name  string
		pages []uint64
		named []uint64 // pages the message names (nil: exit 0 expected)
	}{
		{"key-branch", []uint64{tree.keyRoot}, []uint64{tree.keyRoot}},
		{"key-first-leaf", []uint64{tree.keyLeaves[0]}, []uint64{tree.keyLeaves[0]}},
		{"key-last-leaf", []uint64{last}, []uint64{last}},
		{"root-bucket", []uint64{tree.root}, []uint64{tree.root}},
		{"meta-0", []uint64{0}, []uint64{0}},
		{"meta-1", []uint64{1}, []uint64{1}},
		{"both-meta", []uint64{0, 1}, []uint64{0, 1}},
		{"free-page", []uint64{free}, nil},
		// Bytes inside a value: bbolt has no checksums and the value
		// still decodes, so nothing offline can tell; the HashKV
		// changes (it differs from the other members').
		{"value-overflow-page", []uint64{overflow}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(orig)
			for _, pg := range c.pages {
				clear(b[pg*4096 : (pg+1)*4096])
			}
			path := filepath.Join(t.TempDir(), "db")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"buckets", path}, {"iterate", "key", path, "--decode"}, {"keys", path}, {"history", "/small/versioned", path},
				{"hashkv", path}, {"hash", path}, {"stats", path},
			} {
				r := safeRun(t, append(args, "--timeout", "1s")...)
				msg := r.Stderr
				if r.Err != nil {
					msg += r.Err.Error()
				}
				if c.named == nil {
					if r.Code != cli.ExitOK {
						t.Errorf("%v: exit %d, want 0: %s", args[0], r.Code, msg)
					}
					if args[0] == "hashkv" && (r.Stdout == origHash) != (c.name == "free-page") {
						t.Errorf("hashkv %q, undamaged %q", r.Stdout, origHash)
					}
					continue
				}
				if r.Code != cli.ExitProblems {
					t.Errorf("%v: exit %d, want 1: %s", args[0], r.Code, msg)
				}
				for _, pg := range c.named {
					if want := fmt.Sprintf("page %d at offset %d", pg, pg*4096); !strings.Contains(msg, want) {
						t.Errorf("%v: message does not name %q: %s", args[0], want, msg)
					}
				}
			}
		})
	}
}
