package transport

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"math/rand"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func ent(term, index uint64, data string) *raftpb.Entry {
	return &raftpb.Entry{Type: raftpb.EntryNormal.Enum(), Term: proto.Uint64(term), Index: proto.Uint64(index), Data: []byte(data)}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", "|", "", "[", "", "]", "").Replace(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMsgAppV2WorkedExample: the bytes of PEERS.md §3.4's example (from
// etcd's encoder with raft v3.7.0): a full frame on a fresh stream, then
// the short form for the MsgApp that continues it.
func TestMsgAppV2WorkedExample(t *testing.T) {
	m1 := &raftpb.Message{Type: raftpb.MsgApp.Enum(), To: proto.Uint64(2), From: proto.Uint64(1), Term: proto.Uint64(2),
		LogTerm: proto.Uint64(2), Index: proto.Uint64(5), Entries: []*raftpb.Entry{ent(2, 6, "x")}, Commit: proto.Uint64(5)}
	m2 := &raftpb.Message{Type: raftpb.MsgApp.Enum(), To: proto.Uint64(2), From: proto.Uint64(1), Term: proto.Uint64(2),
		LogTerm: proto.Uint64(2), Index: proto.Uint64(6), Entries: []*raftpb.Entry{ent(2, 7, "y")}, Commit: proto.Uint64(6)}
	want := unhex(t, "02 | 00 00 00 00 00 00 00 19 | 08 03 10 02 18 01 20 02 28 02 30 05 3a 09 [08 00 10 02 18 06 22 01 78] 40 05"+
		"01 | 00 00 00 00 00 00 00 01 | 00 00 00 00 00 00 00 09 | 08 00 10 02 18 07 22 01 79 | 00 00 00 00 00 00 00 06"+
		"00")
	var buf bytes.Buffer
	enc := NewMsgAppV2Encoder(&buf)
	for _, m := range []*raftpb.Message{m1, m2, linkHeartbeat()} {
		if err := enc.Encode(m); err != nil {
			t.Fatal(err)
		}
	}
	enc.Flush()
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("encoded\n%x\nwant\n%x", buf.Bytes(), want)
	}
	dec := NewMsgAppV2Decoder(bytes.NewReader(want), 1, 2)
	for i, w := range []*raftpb.Message{m1, m2, linkHeartbeat()} {
		got, err := dec.Decode()
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, w) {
			t.Fatalf("frame %d: %v, want %v", i, got, w)
		}
	}
	if _, err := dec.Decode(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

// TestMessageStreamLinkHeartbeat: PEERS.md §3.3's link heartbeat from a
// 3.7 member, and a 3.6 member's (every zero field written) decoding alike.
func TestMessageStreamLinkHeartbeat(t *testing.T) {
	var buf bytes.Buffer
	if err := NewMessageEncoder(&buf).Encode(linkHeartbeat()); err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, "00 00 00 00 00 00 00 02 08 08"); !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("%x, want %x", buf.Bytes(), want)
	}
	v36 := unhex(t, "00 00 00 00 00 00 00 14 08 08 10 00 18 00 20 00 28 00 30 00 40 00 50 00 58 00 68 00")
	m, err := NewMessageDecoder(bytes.NewReader(v36), MaxMessageBytes).Decode()
	if err != nil || !IsLinkHeartbeat(m) {
		t.Fatalf("3.6 link heartbeat: %v %v", m, err)
	}
}

// randomMessage is a raft message of a random wire type; MsgApps continue
// the previous one with probability 1/2, so both msgappv2 forms appear.
func randomMessage(r *rand.Rand, prev *raftpb.Message) *raftpb.Message {
	types := []raftpb.MessageType{raftpb.MsgApp, raftpb.MsgAppResp, raftpb.MsgVote, raftpb.MsgVoteResp, raftpb.MsgHeartbeat,
		raftpb.MsgHeartbeatResp, raftpb.MsgProp, raftpb.MsgTransferLeader, raftpb.MsgTimeoutNow, raftpb.MsgReadIndex,
		raftpb.MsgReadIndexResp, raftpb.MsgPreVote, raftpb.MsgPreVoteResp}
	m := &raftpb.Message{Type: types[r.Intn(len(types))].Enum(), From: proto.Uint64(1), To: proto.Uint64(2),
		Term: proto.Uint64(uint64(1 + r.Intn(3)))}
	if r.Intn(2) == 0 {
		m.Commit = proto.Uint64(uint64(r.Intn(100)))
	}
	if r.Intn(4) == 0 {
		m.Context = []byte("ctx")
	}
	if m.GetType() == raftpb.MsgApp || m.GetType() == raftpb.MsgProp {
		m.Index, m.LogTerm = proto.Uint64(uint64(r.Intn(100))), proto.Uint64(m.GetTerm())
		if prev != nil && prev.GetType() == raftpb.MsgApp && r.Intn(2) == 0 {
			m.Term, m.LogTerm = prev.Term, prev.Term
			m.Index = proto.Uint64(prev.GetIndex() + uint64(len(prev.Entries)))
		}
		for i := 0; i < r.Intn(4); i++ {
			m.Entries = append(m.Entries, ent(m.GetTerm(), m.GetIndex()+uint64(i)+1, strings.Repeat("d", r.Intn(40))))
		}
	}
	return m
}

// TestCodecsRoundTrip: seeded random messages through both codecs.
func TestCodecsRoundTrip(t *testing.T) {
	const seed = 7
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewSource(seed))
	var msgs, apps []*raftpb.Message
	var prev *raftpb.Message
	for i := 0; i < 2000; i++ {
		m := randomMessage(r, prev)
		msgs = append(msgs, m)
		if m.GetType() == raftpb.MsgApp {
			apps = append(apps, m)
			prev = m
		}
	}
	var mb, ab bytes.Buffer
	me, ae := NewMessageEncoder(&mb), NewMsgAppV2Encoder(&ab)
	for _, m := range msgs {
		if err := me.Encode(m); err != nil {
			t.Fatal(err)
		}
	}
	short := 0
	for _, m := range apps {
		before := ab.Len() + ae.w.Buffered()
		if err := ae.Encode(m); err != nil {
			t.Fatal(err)
		}
		ae.Flush()
		if ab.Bytes()[before] == frameAppEntries {
			short++
		}
	}
	if short == 0 || short == len(apps) {
		t.Fatalf("%d of %d MsgApps in the short form", short, len(apps))
	}
	md, ad := NewMessageDecoder(&mb, MaxMessageBytes), NewMsgAppV2Decoder(&ab, 1, 2)
	for i, w := range msgs {
		got, err := md.Decode()
		if err != nil || !proto.Equal(got, w) {
			t.Fatalf("message %d: %v %v, want %v", i, got, err, w)
		}
	}
	for i, w := range apps {
		got, err := ad.Decode()
		if err != nil {
			t.Fatalf("msgapp %d: %v", i, err)
		}
		// The short form carries no Context and sets Term/LogTerm/Index/Commit.
		if got.GetTerm() != w.GetTerm() || got.GetLogTerm() != w.GetLogTerm() || got.GetIndex() != w.GetIndex() ||
			got.GetCommit() != w.GetCommit() || len(got.Entries) != len(w.Entries) || got.GetFrom() != 1 || got.GetTo() != 2 {
			t.Fatalf("msgapp %d: %v, want %v", i, got, w)
		}
		for j := range w.Entries {
			if !proto.Equal(got.Entries[j], w.Entries[j]) {
				t.Fatalf("msgapp %d entry %d: %v, want %v", i, j, got.Entries[j], w.Entries[j])
			}
		}
	}
	t.Logf("%d messages, %d MsgApps (%d in the short form)", len(msgs), len(apps), short)
}

// TestDecodersRefuseBadInput: lengths above the limit, truncation, unknown
// frame types and bad protobuf are errors with offsets, never panics.
func TestDecodersRefuseBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		msgapp   bool
		want     string
	}{
		{"huge length", "ffffffffffffffff", false, "limit exceeded"},
		{"truncated message", "0000000000000010 0808", false, "unexpected EOF"},
		{"bad protobuf", "0000000000000002 ffff", false, "offset 0"},
		{"unknown frame", "07", true, "failed to parse type 7 in msgappv2 stream"},
		{"huge entry count", "01 ffffffffffffffff", true, "limit exceeded"},
		{"huge entry", "01 0000000000000001 ffffffffffffffff", true, "limit exceeded"},
		{"truncated entries", "01 0000000000000002 0000000000000002 0808", true, "unexpected EOF"},
		{"bad entry", "01 0000000000000001 0000000000000002 ffff 0000000000000000", true, "entry 0"},
		{"truncated app", "02 0000000000000009 0803", true, "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			in := bytes.NewReader(unhex(t, tc.in))
			if tc.msgapp {
				_, err = NewMsgAppV2Decoder(in, 1, 2).Decode()
			} else {
				_, err = NewMessageDecoder(in, MaxMessageBytes).Decode()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
			if tc.want == "limit exceeded" && !errors.Is(err, ErrExceedSizeLimit) {
				t.Fatalf("%v is not ErrExceedSizeLimit", err)
			}
		})
	}
}

func FuzzMessageDecoder(f *testing.F) {
	var buf bytes.Buffer
	r := rand.New(rand.NewSource(1))
	e := NewMessageEncoder(&buf)
	for i := 0; i < 5; i++ {
		e.Encode(randomMessage(r, nil))
	}
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		d := NewMessageDecoder(bytes.NewReader(b), 1<<20)
		for {
			m, err := d.Decode()
			if err != nil {
				return
			}
			// What decodes re-encodes and decodes to the same message.
			var out bytes.Buffer
			if err := NewMessageEncoder(&out).Encode(m); err != nil {
				t.Fatal(err)
			}
			m2, err := NewMessageDecoder(&out, 1<<20).Decode()
			if err != nil || !proto.Equal(m, m2) {
				t.Fatalf("re-decoded %v %v, want %v", m2, err, m)
			}
		}
	})
}

func FuzzMsgAppV2Decoder(f *testing.F) {
	var buf bytes.Buffer
	r := rand.New(rand.NewSource(1))
	e := NewMsgAppV2Encoder(&buf)
	var prev *raftpb.Message
	for i := 0; i < 20; i++ {
		m := randomMessage(r, prev)
		if m.GetType() == raftpb.MsgApp {
			e.Encode(m)
			prev = m
		}
	}
	e.Encode(linkHeartbeat())
	e.Flush()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		// What decodes, re-encoded, decodes to the same messages (the
		// short form may be chosen differently, the messages are equal).
		d := NewMsgAppV2Decoder(bytes.NewReader(b), 1, 2)
		var got []*raftpb.Message
		for i := 0; i < 1000; i++ {
			m, err := d.Decode()
			if err != nil {
				break
			}
			if !IsLinkHeartbeat(m) && m.GetType() != raftpb.MsgApp {
				return // a full frame may carry any type; the encoder writes only MsgApp
			}
			got = append(got, m)
		}
		var out bytes.Buffer
		e := NewMsgAppV2Encoder(&out)
		for _, m := range got {
			if err := e.Encode(m); err != nil {
				t.Fatal(err)
			}
		}
		e.Flush()
		d2 := NewMsgAppV2Decoder(&out, 1, 2)
		for i, m := range got {
			m2, err := d2.Decode()
			if err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
			if IsLinkHeartbeat(m) && IsLinkHeartbeat(m2) {
				continue // a link heartbeat is its type and zero IDs, whatever else a full frame carried
			}
			if IsLinkHeartbeat(m) != IsLinkHeartbeat(m2) || m.GetTerm() != m2.GetTerm() || m.GetIndex() != m2.GetIndex() ||
				m.GetCommit() != m2.GetCommit() || len(m.Entries) != len(m2.Entries) {
				t.Fatalf("frame %d: re-decoded %v, want %v", i, m2, m)
			}
		}
	})
}
