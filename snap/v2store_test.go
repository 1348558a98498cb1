package snap

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The .snap file `etcdutl snapshot restore` (etcd 3.6.16) wrote is exactly
// EncodeV2Membership + Encode of its membership and metadata.
func TestV2RestoredFixtureByteEqual(t *testing.T) {
	file := restoredSnap(t)
	s, err := Decode(restoredSnapName, file)
	if err != nil {
		t.Fatal(err)
	}
	st, err := DecodeV2Store(s.GetData())
	if err != nil {
		t.Fatal(err)
	}
	want := Membership{Members: []Member{{ID: fixtureMemberID, PeerURLs: []string{"http://127.0.0.1:23800"}}}}
	if !reflect.DeepEqual(st.Membership, want) || st.CurrentIndex != 1 {
		t.Fatalf("membership %+v", st)
	}
	js, err := EncodeV2Membership(&want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(js, s.GetData()) {
		t.Fatalf("JSON differs:\n got %s\nwant %s", js, s.GetData())
	}
	// What restore writes: Metadata{ConfState{voters}, index n, term 1}.
	built := &raftpb.Snapshot{Data: js, Metadata: &raftpb.SnapshotMetadata{
		ConfState: &raftpb.ConfState{Voters: []uint64{fixtureMemberID}},
		Index:     proto.Uint64(1), Term: proto.Uint64(1),
	}}
	if got := Encode(built); !bytes.Equal(got, file) {
		t.Fatal("the whole .snap file differs from etcdutl's")
	}
}

func TestV2MembershipRoundTrip(t *testing.T) {
	var big Membership
	for i := 0; i < 700; i++ { // > 1000 events: the event ring wraps
		m := Member{ID: uint64(0x1000 + i*7919), PeerURLs: []string{fmt.Sprintf("https://10.0.%d.%d:2380", i/250, i%250)}}
		if i%2 == 0 {
			m.Name, m.ClientURLs = fmt.Sprintf("m%d", i), []string{"https://a:2379", "https://b:2379"}
		}
		m.IsLearner = i%5 == 0
		big.Members = append(big.Members, m)
	}
	for i := 0; i < 50; i++ {
		big.Removed = append(big.Removed, uint64(0xdead0000+i))
	}
	big.Version = "3.7.0"
	for name, m := range map[string]Membership{
		"empty":   {},
		"version": {Version: "3.6.0"},
		"removed": {Removed: []uint64{3, 1, 2}},
		"odd": {Members: []Member{
			{ID: 1},                       // nil peer URLs: "peerURLs":null
			{ID: 2, PeerURLs: []string{}}, // "peerURLs":[]
			{ID: 3, Name: "x", ClientURLs: []string{}}, // attributes {"name":"x"}
			{ID: ^uint64(0), PeerURLs: []string{"http://<&>\u2028é"}, IsLearner: true},
		}},
		"big": big,
	} {
		t.Run(name, func(t *testing.T) {
			js, err := EncodeV2Membership(&m)
			if err != nil {
				t.Fatal(err)
			}
			st, err := DecodeV2Store(js)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(st.Membership, m) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", st.Membership, m)
			}
			js2, err := EncodeV2Membership(&st.Membership)
			if err != nil || !bytes.Equal(js, js2) {
				t.Fatalf("re-encode differs: %v", err)
			}
			if !json.Valid(js) {
				t.Fatal("invalid JSON")
			}
		})
	}
	js, _ := EncodeV2Membership(&big)
	var raw struct {
		WatcherHub   struct{ EventHistory v2EventHistory }
		CurrentIndex uint64
	}
	if err := json.Unmarshal(js, &raw); err != nil {
		t.Fatal(err)
	}
	q := raw.WatcherHub.EventHistory.Queue
	if raw.CurrentIndex != 1101 || q.Size != 1000 || q.Front != 101 || q.Back != 101 ||
		raw.WatcherHub.EventHistory.StartIndex != 102 || raw.WatcherHub.EventHistory.LastIndex != 1101 {
		t.Fatalf("event ring: index %d size %d front %d back %d start %d last %d", raw.CurrentIndex,
			q.Size, q.Front, q.Back, raw.WatcherHub.EventHistory.StartIndex, raw.WatcherHub.EventHistory.LastIndex)
	}
}

func TestV2EncodeRejectsDuplicates(t *testing.T) {
	if _, err := EncodeV2Membership(&Membership{Members: []Member{{ID: 1}, {ID: 1}}}); err == nil {
		t.Error("duplicate member accepted")
	}
	if _, err := EncodeV2Membership(&Membership{Removed: []uint64{1, 1}}); err == nil {
		t.Error("duplicate removed member accepted")
	}
}

// A v3.5-style store: user keys under /1, auth under /2, plus an unknown
// top-level dir; membership is still read, the rest is counted.
func TestV2DecodeV35Store(t *testing.T) {
	js := `{"Root":{"Path":"/","Children":{
	 "0":{"Path":"/0","Children":{
	   "members":{"Path":"/0/members","Children":{
	     "b":{"Path":"/0/members/b","Children":{
	       "raftAttributes":{"Path":"/0/members/b/raftAttributes","CreatedIndex":9,"Value":"{\"peerURLs\":[\"http://b\"]}","Children":null},
	       "attributes":{"Path":"/0/members/b/attributes","CreatedIndex":12,"Value":"{\"name\":\"b\"}","Children":null}}},
	     "a":{"Path":"/0/members/a","Children":{
	       "raftAttributes":{"Path":"/0/members/a/raftAttributes","CreatedIndex":3,"Value":"{\"peerURLs\":[\"http://a\"],\"isLearner\":true}","Children":null}}}}},
	   "removed_members":{"Path":"/0/removed_members","Children":{
	     "c":{"Path":"/0/removed_members/c","CreatedIndex":20,"Value":"","Children":null},
	     "0c":{"Path":"/0/removed_members/0c","CreatedIndex":21,"Value":"","Children":null}}},
	   "version":{"Path":"/0/version","Value":"3.5.0","Children":null}}},
	 "1":{"Path":"/1","Children":{"foo":{"Path":"/1/foo","Value":"bar","Children":null},
	      "dir":{"Path":"/1/dir","Children":{"x":{"Path":"/1/dir/x","Value":"","Children":null}}}}},
	 "2":{"Path":"/2","Children":{"enabled":{"Path":"/2/enabled","Value":"false","Children":null},
	      "users":{"Path":"/2/users","Children":{}},"roles":{"Path":"/2/roles","Children":{}}}},
	 "9":{"Path":"/9","Children":{}}}},
	 "CurrentIndex":42,"CurrentVersion":2}`
	st, err := DecodeV2Store([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	want := &V2Store{
		Membership: Membership{
			Members: []Member{
				{ID: 0xa, PeerURLs: []string{"http://a"}, IsLearner: true},
				{ID: 0xb, PeerURLs: []string{"http://b"}, Name: "b", ClientURLs: []string{}},
			},
			Removed: []uint64{0xc},
			Version: "3.5.0",
		},
		CurrentIndex: 42, KeyNodes: 2, AuthNodes: 1, Other: []string{"/9"},
	}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("got  %+v\nwant %+v", st, want)
	}
}

func TestV2DecodeErrors(t *testing.T) {
	for _, js := range []string{
		``,
		`{`,
		`[]`,
		`{"Root":null}`,
		`{"Root":{"Children":{"0":{"Children":{"members":{"Children":{"zz":{"Children":{}}}}}}}}}`,
		`{"Root":{"Children":{"0":{"Children":{"members":{"Children":{"1":{"Children":{}}}}}}}}}`,
		`{"Root":{"Children":{"0":{"Children":{"members":{"Children":{"1":{"Children":null}}}}}}}}`,
		`{"Root":{"Children":{"0":{"Children":{"members":{"Children":{"1":{"Children":{"raftAttributes":{"Value":"{"}}}}}}}}}}}`,
		`{"Root":{"Children":{"0":{"Children":{"members":{"Children":{"1":{"Children":{"raftAttributes":{"Value":"{}"},"x":{}}}}}}}}}}}`,
		`{"Root":{"Children":{"0":{"Children":{"members":{"Children":{"1":{"Children":{"raftAttributes":{"Value":"{}"}}},"01":{"Children":{"raftAttributes":{"Value":"{}"}}}}}}}}}}}`,
		`{"Root":{"Children":{"0":{"Children":{"removed_members":{"Children":{"-1":{}}}}}}}}`,
	} {
		if _, err := DecodeV2Store([]byte(js)); err == nil || !strings.HasPrefix(err.Error(), "snap: ") {
			t.Errorf("%s: %v", js, err)
		}
	}
}
