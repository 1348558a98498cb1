package boltfile

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// makeDB writes a bbolt file with 512-byte pages (a small image): a bucket
// with enough keys for a branch page, one with an inline sub-bucket, and
// one large value with overflow pages.
func makeDB(t testing.TB, keys int) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: 512, NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("key"))
		if err != nil {
			return err
		}
		for i := 0; i < keys; i++ {
			if err := b.Put(fmt.Appendf(nil, "k%04d", i), bytes.Repeat([]byte{'v'}, 20)); err != nil {
				return err
			}
		}
		if keys > 10 {
			if err := b.Put([]byte("zbig"), bytes.Repeat([]byte{'x'}, 1500)); err != nil {
				return err
			}
		}
		m, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		sub, err := m.CreateBucket([]byte("sub"))
		if err != nil {
			return err
		}
		return sub.Put([]byte("a"), []byte("b"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pagesOf returns the ids of the pages with the given flags below the
// high-water mark.
func pagesOf(t *testing.T, b []byte, flags uint16) []uint64 {
	rep := Check(bytes.NewReader(b), int64(len(b)), Options{})
	var ids []uint64
	for id := uint64(2); id < rep.Meta.HighWater; id++ {
		if ParseHeader(b[id*512:]).Flags == flags && ParseHeader(b[id*512:]).ID == id {
			ids = append(ids, id)
		}
	}
	return ids
}

func TestCheckIntact(t *testing.T) {
	b := makeDB(t, 200)
	rep := Check(bytes.NewReader(b), int64(len(b)), Options{})
	if !rep.OK || len(rep.Problems) != 0 || len(rep.Rejected) != 0 {
		t.Fatalf("intact db: %+v", rep)
	}
	if rep.Meta.PageSize != 512 || rep.Meta.Freelist != NoFreelist || rep.Meta.HighWater*512 > uint64(len(b)) {
		t.Fatalf("meta %+v (file %d bytes)", rep.Meta, len(b))
	}
	if len(pagesOf(t, b, BranchFlag)) == 0 {
		t.Fatal("the fixture has no branch page")
	}
}

// TestCheckDamage: each kind of damage is named with its page and offset.
func TestCheckDamage(t *testing.T) {
	orig := makeDB(t, 200)
	branch := pagesOf(t, orig, BranchFlag)[0]
	leaves := pagesOf(t, orig, LeafFlag)
	leaf := leaves[len(leaves)/2]
	ps := int64(512)
	for _, c := range []struct {
		name    string
		damage  func(b []byte)
		page    uint64
		off     int64
		detail  string
		rejects int
	}{
		{"header id", func(b []byte) { b[int64(leaf)*ps] ^= 0x40 }, leaf, int64(leaf) * ps, "header says page", 0},
		{"flags", func(b []byte) { b[int64(leaf)*ps+8] = 0x08 }, leaf, int64(leaf)*ps + 8, "want branch or leaf", 0},
		{"count", func(b []byte) { binary.LittleEndian.PutUint16(b[int64(leaf)*ps+10:], 1000) }, leaf, int64(leaf)*ps + 10, "elements do not fit", 0},
		{"wild child", func(b []byte) { binary.LittleEndian.PutUint64(b[int64(branch)*ps+16+8:], 1<<40) }, branch, int64(branch)*ps + 16 + 8, "outside 2..", 0},
		{"cycle", func(b []byte) {
			binary.LittleEndian.PutUint64(b[int64(branch)*ps+16+8:], binary.LittleEndian.Uint64(b[int64(branch)*ps+32+8:]))
		}, branch, int64(branch)*ps + 32 + 8, "referenced twice", 0},
		{"key order", func(b []byte) {
			// Swap the first two keys' last bytes: "k000x" keys.
			e := int64(leaf)*ps + 16
			k0 := e + int64(binary.LittleEndian.Uint32(b[e+4:]))
			k1 := e + 16 + int64(binary.LittleEndian.Uint32(b[e+16+4:]))
			b[k0+4], b[k1+4] = b[k1+4], b[k0+4]
		}, leaf, -1, "keys out of order", 0},
		{"element past page", func(b []byte) { binary.LittleEndian.PutUint32(b[int64(leaf)*ps+16+4:], 5000) }, leaf, int64(leaf)*ps + 16, "ends at byte", 0},
		{"both metas", func(b []byte) { b[16] ^= 1; b[ps+16] ^= 1 }, 0, 0, "no valid meta page", 2},
		{"truncated", func(b []byte) {}, 0, 0, "truncated", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(orig)
			c.damage(b)
			size := int64(len(b))
			if c.name == "truncated" {
				size = 4 * ps
			}
			rep := Check(bytes.NewReader(b), size, Options{})
			if len(rep.Problems) == 0 {
				t.Fatalf("no problem found: %+v", rep)
			}
			p := rep.Problems[0]
			if !strings.Contains(p.Detail, c.detail) || (c.name != "truncated" && c.name != "both metas" && p.Page != c.page) || (c.off >= 0 && c.name != "truncated" && p.Offset != c.off) {
				t.Fatalf("got %v, want page %d offset %d %q", p, c.page, c.off, c.detail)
			}
			if len(rep.Rejected) != c.rejects {
				t.Errorf("rejected %v", rep.Rejected)
			}
			if err := rep.First("/x/db"); !strings.Contains(err.Error(), "/x/db: corrupt at offset") {
				t.Errorf("error %v", err)
			}
		})
	}
}

// TestOneMetaRejected: bbolt reads the other meta page, so the tree is
// still checked and the rejected page is listed apart.
func TestOneMetaRejected(t *testing.T) {
	b := makeDB(t, 50)
	b[512+16+56] ^= 1 // meta 1's checksum
	rep := Check(bytes.NewReader(b), int64(len(b)), Options{})
	if !rep.OK || rep.Meta.Page != 0 || len(rep.Problems) != 0 || len(rep.Rejected) != 1 ||
		rep.Rejected[0].Page != 1 || rep.Rejected[0].Offset != 512 || !strings.Contains(rep.Rejected[0].Detail, "checksum") {
		t.Fatalf("%+v", rep)
	}
}

// FuzzCheck: no input makes Check panic, loop or name an offset outside
// the file.
func FuzzCheck(f *testing.F) {
	for _, n := range []int{3, 40} {
		b := makeDB(f, n)
		m, _, _ := ReadMeta(bytes.NewReader(b), int64(len(b)))
		f.Add(b[:m.HighWater*512]) // the pages in use
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rep := Check(bytes.NewReader(b), int64(len(b)), Options{Limit: 1000})
		for _, p := range rep.Problems {
			// (A meta page that cannot be read is named where it
			// should be, possibly past a short file's end.)
			if p.Offset < 0 || (rep.OK && p.Offset > int64(len(b))) {
				t.Fatalf("problem %v outside the %d-byte file", p, len(b))
			}
		}
		if rep.OK && len(rep.Problems) == 0 && rep.Meta.HighWater*uint64(rep.Meta.PageSize) > uint64(len(b)) {
			t.Fatalf("a tree past the end of the file passes: %+v", rep.Meta)
		}
	})
}
