package snap

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/vfs"
)

func TestParseFileName(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Point
		ok   bool
	}{
		{"0000000000000002-00000000000003e9.snap", Point{2, 1001}, true},
		{"ffffffffffffffff-ffffffffffffffff.snap", Point{^uint64(0), ^uint64(0)}, true},
		{"0000000000000002-00000000000003E9.snap", Point{}, false},
		{"0000000000000002-00000000000003e9.snap.broken", Point{}, false},
		{"0000000000000002-00000000000003e9.snap.db", Point{}, false},
		{"000000000000002-00000000000003e9.snap", Point{}, false},
		{"0000000000000002_00000000000003e9.snap", Point{}, false},
		{"tmp0000000000000002-00000000000003e9.snap.part", Point{}, false},
		{"+000000000000002-00000000000003e9.snap", Point{}, false},
		{"db", Point{}, false},
	} {
		p, ok := ParseFileName(tc.name)
		if p != tc.p || ok != tc.ok {
			t.Errorf("ParseFileName(%q) = %v, %v; want %v, %v", tc.name, p, ok, tc.p, tc.ok)
		}
		if ok && p.FileName() != tc.name {
			t.Errorf("FileName(%v) = %q, want %q", p, p.FileName(), tc.name)
		}
	}
}

// The six .snap files etcd 3.6.16 wrote load with the term, index and conf
// state their names and etcd-dump-logs show, and re-encode to the same
// bytes.
func TestFixtureSnapsLoad(t *testing.T) {
	files := fixtureSnaps(t)
	dir := writeSnapDir(t, files)
	before := dirDigest(t, dir)
	for i, name := range fixtureSnapNames {
		s, err := Read(vfs.OS{}, filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		want := Point{Term: 2, Index: uint64(1001 * (i + 1))}
		if got := PointOf(s); got != want {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
		cs := s.GetMetadata().GetConfState()
		if !reflect.DeepEqual(cs.GetVoters(), []uint64{fixtureMemberID}) || cs.GetAutoLeave() ||
			len(cs.GetLearners())+len(cs.GetVotersOutgoing())+len(cs.GetLearnersNext()) != 0 || cs.AutoLeave == nil {
			t.Errorf("%s: conf state %v", name, cs)
		}
		if got := Encode(s); !bytes.Equal(got, files[name]) {
			t.Errorf("%s: Encode(Read(f)) differs from the file", name)
		}
		st, err := DecodeV2Store(s.GetData())
		if err != nil {
			t.Fatal(err)
		}
		wantM := Membership{
			Members: []Member{{ID: fixtureMemberID, PeerURLs: []string{"http://127.0.0.1:23800"},
				Name: "default", ClientURLs: []string{"http://127.0.0.1:23790"}}},
			Version: "3.6.0",
		}
		if !reflect.DeepEqual(st.Membership, wantM) || st.KeyNodes != 0 || st.AuthNodes != 0 || st.Other != nil {
			t.Errorf("%s: v2 store %+v", name, st)
		}
		js, err := EncodeV2Membership(&st.Membership)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(js, s.GetData()) {
			t.Errorf("%s: EncodeV2Membership differs from etcd's JSON:\n%s\n%s", name, js, s.GetData())
		}
	}
	// The newest, as etcd-dump-logs reports it: term=2 index=6006.
	s, p, skipped, err := LoadNewest(vfs.OS{}, dir, []Point{{2, 1001}, {2, 6006}, {2, 3003}})
	if err != nil || len(skipped) != 0 || p != (Point{2, 6006}) || PointOf(s) != p {
		t.Fatalf("LoadNewest = %v, %v, %v", p, skipped, err)
	}
	ps, err := List(vfs.OS{}, dir)
	if err != nil || len(ps) != 6 || ps[0] != (Point{2, 6006}) || ps[5] != (Point{2, 1001}) {
		t.Fatalf("List = %v, %v", ps, err)
	}
	requireSameDigest(t, before, dirDigest(t, dir))
}

func TestLoadNewestChoosesAmongValid(t *testing.T) {
	dir := writeSnapDir(t, fixtureSnaps(t))
	before := dirDigest(t, dir)
	for _, tc := range []struct {
		valid []Point
		want  Point
		err   error
	}{
		{[]Point{{2, 3003}, {2, 1001}}, Point{2, 3003}, nil},
		{[]Point{{2, 5005}, {3, 6006}}, Point{2, 5005}, nil},
		{[]Point{{1, 6006}, {2, 7007}}, Point{}, ErrNoSnapshot},
		{nil, Point{}, ErrNoSnapshot},
	} {
		s, p, skipped, err := LoadNewest(vfs.OS{}, dir, tc.valid)
		if !errors.Is(err, tc.err) || p != tc.want || len(skipped) != 0 {
			t.Errorf("LoadNewest(%v) = %v, %v, %v", tc.valid, p, skipped, err)
		}
		if err == nil && PointOf(s) != tc.want {
			t.Errorf("LoadNewest(%v) loaded %v", tc.valid, PointOf(s))
		}
	}
	_, p, _, err := LoadNewestMatching(vfs.OS{}, dir, nil)
	if err != nil || p != (Point{2, 6006}) {
		t.Errorf("LoadNewestMatching(nil) = %v, %v", p, err)
	}
	_, _, _, err = LoadNewest(vfs.OS{}, filepath.Join(dir, "missing"), nil)
	if err == nil || errors.Is(err, ErrNoSnapshot) {
		t.Errorf("missing dir: %v", err)
	}
	requireSameDigest(t, before, dirDigest(t, dir))
}

// A damaged newest .snap gives a typed error naming the file, and loading
// falls back to the older valid one without touching any file.
func TestCorruptNewestFallsBack(t *testing.T) {
	files := fixtureSnaps(t)
	newest := fixtureSnapNames[5]
	orig := files[newest]
	all := make([]Point, 0, 6)
	for _, n := range fixtureSnapNames {
		p, _ := ParseFileName(n)
		all = append(all, p)
	}
	flip := func(off int) []byte {
		b := bytes.Clone(orig)
		b[off] ^= 0x10
		return b
	}
	cases := []struct {
		name   string
		data   []byte
		target error
	}{
		{"empty", nil, ErrEmptySnapshot},
		{"flip-in-json", flip(len(orig) / 2), ErrCRCMismatch},
		{"flip-in-crc", flip(2), ErrCRCMismatch},
		{"flip-in-metadata", flip(len(orig) - 3), ErrCRCMismatch},
		{"truncated-half", orig[:len(orig)/2], nil},
		{"truncated-one-byte", orig[:len(orig)-1], nil},
		{"crc-field-only", orig[:6], ErrEmptySnapshot},
		{"zero-crc", append([]byte{0x08, 0x00}, orig[6:]...), ErrEmptySnapshot},
		{"zeros", make([]byte, len(orig)), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeSnapDir(t, files)
			path := filepath.Join(dir, newest)
			if err := os.WriteFile(path, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			before := dirDigest(t, dir)

			_, err := Read(vfs.OS{}, path)
			ce := corrupt.As(err)
			if ce == nil || !errors.Is(err, corrupt.ErrCorrupt) || ce.Path != path || !strings.Contains(err.Error(), newest) {
				t.Fatalf("Read: %v, want a *corrupt.Error naming %s", err, path)
			}
			if ce.Offset < 0 || ce.Offset > int64(len(tc.data)) {
				t.Errorf("offset %d outside the file", ce.Offset)
			}
			if tc.target != nil && !errors.Is(err, tc.target) {
				t.Errorf("Read: %v, want %v", err, tc.target)
			}

			s, p, skipped, err := LoadNewest(vfs.OS{}, dir, all)
			if err != nil || p != (Point{2, 5005}) || PointOf(s) != p {
				t.Fatalf("LoadNewest = %v, %v", p, err)
			}
			if len(skipped) != 1 || corrupt.As(skipped[0]) == nil || corrupt.As(skipped[0]).Path != path {
				t.Fatalf("skipped = %v", skipped)
			}
			requireSameDigest(t, before, dirDigest(t, dir))

			// The server's explicit step: quarantine, then load again.
			if err := Quarantine(vfs.OS{}, path); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(path + ".broken"); err != nil {
				t.Fatal(err)
			}
			_, p, skipped, err = LoadNewest(vfs.OS{}, dir, all)
			if err != nil || p != (Point{2, 5005}) || len(skipped) != 0 {
				t.Fatalf("after quarantine: %v, %v, %v", p, skipped, err)
			}
		})
	}
}

// Every single-bit flip of a real .snap file is detected, as a typed error
// whose offset lies inside the file, except flips of the unused high bits
// of the 5-byte crc varint (a uint32 field: protobuf, and so etcd, drop
// bits 32-34), which decode to the same snapshot.
func TestEveryBitFlipDetected(t *testing.T) {
	orig := fixtureSnaps(t)[fixtureSnapNames[0]]
	want, err := Decode("x.snap", orig)
	if err != nil {
		t.Fatal(err)
	}
	b := bytes.Clone(orig)
	harmless := 0
	for i := range b {
		for bit := 0; bit < 8; bit++ {
			b[i] ^= 1 << bit
			s, err := Decode("x.snap", b)
			if err == nil {
				if i != 5 || bit < 4 || bit > 6 || !proto.Equal(s, want) {
					t.Fatalf("flip byte %d bit %d: not detected", i, bit)
				}
				harmless++
			} else if ce := corrupt.As(err); ce == nil || ce.Offset < 0 || ce.Offset > int64(len(b)) {
				t.Fatalf("flip byte %d bit %d: %v", i, bit, err)
			}
			b[i] ^= 1 << bit
		}
	}
	t.Logf("%d bit flips, %d harmless (crc varint bits 32-34)", len(b)*8, harmless)
}

func TestLoadNewestNameMetadataMismatch(t *testing.T) {
	files := fixtureSnaps(t)
	// A valid file under another name (as if copied by hand).
	files["0000000000000003-0000000000001f40.snap"] = files[fixtureSnapNames[5]]
	dir := writeSnapDir(t, files)
	_, p, skipped, err := LoadNewest(vfs.OS{}, dir, []Point{{3, 8000}, {2, 6006}})
	if err != nil || p != (Point{2, 6006}) || len(skipped) != 1 || !strings.Contains(skipped[0].Error(), "does not match the file name") {
		t.Fatalf("LoadNewest = %v, %v, %v", p, skipped, err)
	}
}

func testSnapshot(index, term uint64, data []byte) *raftpb.Snapshot {
	return &raftpb.Snapshot{
		Data: data,
		Metadata: &raftpb.SnapshotMetadata{
			ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}, AutoLeave: proto.Bool(false)},
			Index:     proto.Uint64(index),
			Term:      proto.Uint64(term),
		},
	}
}

func TestSaveReadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for _, s := range []*raftpb.Snapshot{
		testSnapshot(1, 1, []byte("{}")),
		testSnapshot(0x1776, 2, bytes.Repeat([]byte{0xab}, 100000)),
		testSnapshot(7, 3, nil),
		testSnapshot(8, 3, []byte{}),
		{Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(9)}}, // sparse presence
	} {
		path, err := Save(vfs.OS{}, dir, s)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(path) != PointOf(s).FileName() {
			t.Errorf("saved as %s", path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, Encode(s)) {
			t.Errorf("%s: file differs from Encode", path)
		}
		got, err := Read(vfs.OS{}, path)
		if err != nil {
			t.Fatal(err)
		}
		want := raftpb.EnsureSnapshot(proto.Clone(s).(*raftpb.Snapshot))
		if !proto.Equal(got, want) {
			t.Errorf("%s: read %v, want %v", path, got, want)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm()&0o600 != 0o600 {
			t.Errorf("mode %v", fi.Mode())
		}
	}
	names, _ := vfs.OS{}.ReadDirNames(dir)
	for _, n := range names {
		if strings.HasPrefix(n, TempPrefix) {
			t.Errorf("temporary file left: %s", n)
		}
	}
	if _, err := Save(vfs.OS{}, dir, testSnapshot(0, 1, []byte("x"))); err == nil {
		t.Error("Save of index 0 succeeded")
	}
}

// Saving what was read from etcd's files gives etcd's bytes.
func TestSaveReproducesFixture(t *testing.T) {
	files := fixtureSnaps(t)
	dir := t.TempDir()
	for name, b := range files {
		s, err := Decode(name, b)
		if err != nil {
			t.Fatal(err)
		}
		path, err := Save(vfs.OS{}, dir, s)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if filepath.Base(path) != name || !bytes.Equal(got, b) {
			t.Errorf("%s: saved %s, bytes equal %v", name, path, bytes.Equal(got, b))
		}
	}
}

func TestPurge(t *testing.T) {
	files := fixtureSnaps(t)
	files["0000000000000001-0000000000000001.snap"] = files[fixtureSnapNames[0]]
	files["0000000000000001-0000000000000002.snap.broken"] = []byte("x")
	files["0000000000000001.snap.db"] = []byte("db")
	files["db"] = []byte("db")
	dir := writeSnapDir(t, files)
	if removed, err := Purge(vfs.OS{}, dir, 0); err != nil || len(removed) != 0 {
		t.Fatalf("Purge(0) = %v, %v", removed, err)
	}
	removed, err := Purge(vfs.OS{}, dir, DefaultMaxSnapshots)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "0000000000000001-0000000000000001.snap"), filepath.Join(dir, fixtureSnapNames[0])}
	if !reflect.DeepEqual(removed, want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	names, _ := vfs.OS{}.ReadDirNames(dir)
	wantNames := append([]string{"0000000000000001-0000000000000002.snap.broken", "0000000000000001.snap.db"}, fixtureSnapNames[1:]...)
	wantNames = append(wantNames, "db")
	if !reflect.DeepEqual(names, wantNames) {
		t.Fatalf("left %v, want %v", names, wantNames)
	}
	if removed, err := Purge(vfs.OS{}, dir, 5); err != nil || len(removed) != 0 {
		t.Fatalf("second Purge = %v, %v", removed, err)
	}
}

func TestDecodeEnvelopeEdgeCases(t *testing.T) {
	data := MarshalSnapshot(testSnapshot(5, 1, []byte("x")))
	good := EncodeEnvelope(data)
	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"good", good, true},
		{"unknown field skipped", append(bytes.Clone(good), 0x18, 0x05), true},
		{"data before crc", append(good[6:], good[:6]...), true},
		{"crc only", good[:6], false},
		{"data only", good[6:], false},
		{"bad tag", []byte{0x80}, false},
		{"length past end", []byte{0x08, 0x01, 0x12, 0xff, 0x01}, false},
		{"huge length", []byte{0x08, 0x01, 0x12, 0xff, 0xff, 0xff, 0xff, 0x0f}, false},
		{"varint too long", []byte{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, false},
		{"group tags", []byte{0x0b, 0x0c}, false},
	} {
		_, err := Decode("t.snap", tc.b)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
		if err != nil && corrupt.As(err) == nil {
			t.Errorf("%s: untyped error %v", tc.name, err)
		}
	}
	// A CRC-valid envelope whose payload is not a raftpb.Snapshot.
	bad := EncodeEnvelope([]byte{0xff})
	_, err := Decode("t.snap", bad)
	if ce := corrupt.As(err); ce == nil || ce.Offset != int64(len(bad)-1) || !strings.Contains(err.Error(), "raftpb") {
		t.Errorf("bad payload: %v", err)
	}
}
