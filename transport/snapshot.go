package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// SnapshotStore keeps the db of a snapshot a peer sends.
type SnapshotStore interface {
	// SaveDB reads the db that follows the MsgSnap m from r to its end,
	// checks it, and keeps it as the db of m's snapshot (etcd:
	// member/snap/<index>.snap.db). It returns the bytes read. On error
	// nothing is kept.
	SaveDB(r io.Reader, m *raftpb.Message) (int64, error)
}

// SnapshotMessage is a MsgSnap and the db taken at its index.
type SnapshotMessage struct {
	Message *raftpb.Message
	DB      io.Reader // exactly Size bytes
	Size    int64
	// Done is called once the snapshot is sent or has failed.
	Done func(sent bool)
}

// SendSnapshot POSTs a snapshot to /raft/snapshot of its To member in the
// background: the length-prefixed MsgSnap, then the db, chunked. raft
// hears the outcome through ReportSnapshot, as from etcd's sender.
func (t *Transport) SendSnapshot(sm *SnapshotMessage) {
	to := sm.Message.GetTo()
	p := t.peer(to)
	if p == nil {
		t.cfg.Raft.ReportSnapshot(to, raft.SnapshotFailure)
		if sm.Done != nil {
			sm.Done(false)
		}
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		err := p.postSnapshot(sm)
		if sm.Done != nil {
			defer sm.Done(err == nil) // after raft has heard
		}
		if err != nil {
			p.status.deactivate()
			t.cfg.Raft.ReportUnreachable(to)
			t.cfg.Raft.ReportSnapshot(to, raft.SnapshotFailure)
			if errors.Is(err, ErrMemberRemoved) {
				t.critical(err)
			}
			t.log.Warn("failed to send database snapshot", "to", idString(to), "index", sm.Message.GetSnapshot().GetMetadata().GetIndex(), "error", err)
			return
		}
		p.status.activate()
		t.cfg.Raft.ReportSnapshot(to, raft.SnapshotFinish)
		t.log.Info("sent database snapshot", "to", idString(to), "index", sm.Message.GetSnapshot().GetMetadata().GetIndex(), "db-bytes", sm.Size)
	}()
}

// countingReader fails unless exactly want bytes come out of r.
type countingReader struct {
	r    io.Reader
	n    int64
	want int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if c.n > c.want {
		return n, fmt.Errorf("rafthttp: snapshot db is longer than its %d bytes", c.want)
	}
	if err == io.EOF && c.n != c.want {
		return n, fmt.Errorf("rafthttp: snapshot db ended at %d of %d bytes", c.n, c.want)
	}
	return n, err
}

func (p *peer) postSnapshot(sm *SnapshotMessage) error {
	var env bytes.Buffer
	if err := NewMessageEncoder(&env).Encode(sm.Message); err != nil {
		return err
	}
	body := io.MultiReader(&env, &countingReader{r: sm.DB, want: sm.Size})
	u := p.picker.pick()
	uu := u
	uu.Path = "/raft/snapshot"
	// No Content-Length: the body goes chunked, as etcd's.
	req, err := http.NewRequestWithContext(p.ctx, http.MethodPost, uu.String(), io.NopCloser(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	p.t.setHeaders(req.Header)
	resp, err := p.t.pipelineClient.Do(req)
	if err != nil {
		p.picker.unreachable(u)
		return err
	}
	defer resp.Body.Close()
	timer := time.AfterFunc(ConnReadTimeout, func() { resp.Body.Close() })
	b, err := io.ReadAll(resp.Body)
	timer.Stop()
	if err != nil {
		p.picker.unreachable(u)
		return err
	}
	if err := checkPostResponse(resp, b); err != nil {
		p.picker.unreachable(u)
		return err
	}
	return nil
}

func (t *Transport) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	if !t.acceptPost(w, r) {
		return
	}
	m, err := NewMessageDecoder(r.Body, MaxSnapshotBytes).Decode()
	if err != nil {
		http.Error(w, fmt.Sprintf("failed to decode raft message (%v)", err), http.StatusBadRequest)
		return
	}
	if m.GetType() != raftpb.MsgSnap || m.GetSnapshot() == nil {
		http.Error(w, "wrong raft message type", http.StatusBadRequest)
		return
	}
	if t.cfg.Snapshots == nil {
		http.Error(w, "failed to save KV snapshot (this member takes no snapshots)", http.StatusInternalServerError)
		return
	}
	start := time.Now()
	n, err := t.cfg.Snapshots.SaveDB(r.Body, m)
	if err != nil {
		t.log.Warn("failed to save incoming database snapshot", "from", idString(m.GetFrom()), "index", m.GetSnapshot().GetMetadata().GetIndex(), "error", err)
		http.Error(w, fmt.Sprintf("failed to save KV snapshot (%v)", err), http.StatusInternalServerError)
		return
	}
	t.log.Info("received and saved database snapshot", "from", idString(m.GetFrom()), "index", m.GetSnapshot().GetMetadata().GetIndex(),
		"db-bytes", n, "took", time.Since(start).String())
	if err := t.cfg.Raft.Process(r.Context(), m); err != nil {
		http.Error(w, fmt.Sprintf("failed to process raft message (%v)", err), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
