package robustness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// recorder timestamps requests on one monotonic clock and collects the
// history.
type recorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
	// Serializable reads: a member answers from its own applied state,
	// possibly stale, so they are not in the linearizable history; each
	// is checked against the KV history at the revision it reports.
	serial []serialRead
}

// serialRead is a serializable read's answer.
type serialRead struct {
	client int
	key    int
	out    response
}

func (r *recorder) serializable(ctx context.Context, cli *clientv3.Client, clientID, key int, timeout time.Duration) error {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	resp, err := cli.Get(rctx, keyName(key), clientv3.WithSerializable())
	cancel()
	if err != nil {
		return err
	}
	out := response{Rev: resp.Header.Revision}
	if len(resp.Kvs) > 0 {
		out.Found, out.KV = true, fromKV(resp.Kvs[0])
	}
	r.mu.Lock()
	r.serial = append(r.serial, serialRead{clientID, key, out})
	r.mu.Unlock()
	return nil
}

func (r *recorder) now() int64 { return int64(time.Since(r.start)) }

func (r *recorder) add(op porcupine.Operation) {
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

func (r *recorder) history() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]porcupine.Operation(nil), r.ops...)
}

// do sends one request and records it: a response as it came, an error as
// an unknown outcome that never returns (the request may still be applied
// at any later time, or never).
func (r *recorder) do(ctx context.Context, cli *clientv3.Client, clientID int, req request, timeout time.Duration) (response, error) {
	call := r.now()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	out, err := send(rctx, cli, req)
	cancel()
	ret := r.now()
	if err != nil && (req.Lease != 0) {
		// A lease refused at apply is a definite outcome, as etcd's
		// apply returns it (the request went through raft).
		switch rpctypes.Error(err) {
		case rpctypes.ErrLeaseNotFound:
			out, err = response{Err: errLeaseNotFound}, nil
		case rpctypes.ErrLeaseExist:
			out, err = response{Err: errLeaseExists}, nil
		}
	}
	if err != nil {
		r.add(porcupine.Operation{ClientId: clientID, Input: req, Call: call, Output: response{Unknown: true}, Return: infinity})
		return response{}, err
	}
	r.add(porcupine.Operation{ClientId: clientID, Input: req, Call: call, Output: out, Return: ret})
	return out, nil
}

func send(ctx context.Context, cli *clientv3.Client, req request) (response, error) {
	key := keyName(req.Key)
	switch req.Kind {
	case opGet:
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return response{}, err
		}
		out := response{Rev: resp.Header.Revision}
		if len(resp.Kvs) > 0 {
			out.Found, out.KV = true, fromKV(resp.Kvs[0])
		}
		return out, nil
	case opPut:
		var opts []clientv3.OpOption
		if req.Lease != 0 {
			opts = append(opts, clientv3.WithLease(clientv3.LeaseID(leaseID(req.Lease-1))))
		}
		resp, err := cli.Put(ctx, key, req.Value, opts...)
		if err != nil {
			return response{}, err
		}
		return response{Rev: resp.Header.Revision}, nil
	case opLeaseGrant:
		// The raw Lease service: clientv3's Grant cannot choose the ID.
		resp, err := clientv3.RetryLeaseClient(cli).LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: leaseID(req.Lease - 1), TTL: 600})
		if err != nil {
			return response{}, err
		}
		if resp.Error != "" {
			return response{}, fmt.Errorf("lease grant: %s", resp.Error)
		}
		return response{Rev: resp.Header.Revision}, nil
	case opLeaseRevoke:
		resp, err := cli.Revoke(ctx, clientv3.LeaseID(leaseID(req.Lease-1)))
		if err != nil {
			return response{}, err
		}
		return response{Rev: resp.Header.Revision}, nil
	case opDelete:
		resp, err := cli.Delete(ctx, key)
		if err != nil {
			return response{}, err
		}
		return response{Rev: resp.Header.Revision, Deleted: resp.Deleted}, nil
	case opTxn:
		cmp := clientv3.Compare(clientv3.ModRevision(key), "=", req.CmpModRev)
		if req.CmpValue {
			cmp = clientv3.Compare(clientv3.Value(key), "=", req.CmpValueOf)
		}
		resp, err := cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, req.Value)).Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return response{}, err
		}
		out := response{Rev: resp.Header.Revision, Succeeded: resp.Succeeded}
		if !resp.Succeeded {
			if len(resp.Responses) != 1 || resp.Responses[0].GetResponseRange() == nil {
				return response{}, fmt.Errorf("txn else branch: %d responses", len(resp.Responses))
			}
			if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
				out.Found, out.KV = true, fromKV(kvs[0])
			}
		}
		return out, nil
	}
	return response{}, fmt.Errorf("unknown op kind %d", req.Kind)
}

func fromKV(kv *mvccpb.KeyValue) keyValue {
	return keyValue{Value: string(kv.Value), Mod: kv.ModRevision, Create: kv.CreateRevision, Version: kv.Version, Lease: kv.Lease}
}

// workloadClient issues random requests until the deadline: gets
// (linearizable, and serializable ones checked apart), puts of unique
// values, deletes, and txns comparing the mod revision or value it last
// saw for the key, lease grants, puts with a lease and revokes (no
// keep-alives or expiry: the TTL outlives the run, see RELIABILITY.md).
func workloadClient(ctx context.Context, rec *recorder, cli *clientv3.Client, id int, seed uint64, until time.Time, stats *workloadStats) {
	r := rand.New(rand.NewPCG(seed, uint64(id)+1))
	type seen struct {
		mod   int64
		value string
	}
	last := map[int]seen{}
	seq := 0
	for time.Now().Before(until) && ctx.Err() == nil {
		req := request{Key: r.IntN(numKeys)}
		seq++
		value := fmt.Sprintf("c%d-%d", id, seq)
		switch p := r.IntN(100); {
		case p < 10:
			if err := rec.serializable(ctx, cli, id, req.Key, 700*time.Millisecond); err != nil {
				stats.addErr()
				time.Sleep(time.Duration(20+r.IntN(30)) * time.Millisecond)
			}
			continue
		case p < 40:
			req.Kind = opGet
		case p < 62:
			req.Kind, req.Value = opPut, value
		case p < 70:
			req.Kind, req.Value, req.Lease = opPut, value, 1+r.IntN(numLeases)
		case p < 74:
			req.Kind, req.Lease = opLeaseGrant, 1+r.IntN(numLeases)
		case p < 77:
			req.Kind, req.Lease = opLeaseRevoke, 1+r.IntN(numLeases)
		case p < 84:
			req.Kind = opDelete
		default:
			req.Kind, req.Value = opTxn, value
			s := last[req.Key]
			if r.IntN(2) == 0 {
				req.CmpValue, req.CmpValueOf = true, s.value
			} else {
				req.CmpModRev = s.mod
			}
		}
		out, err := rec.do(ctx, cli, id, req, 700*time.Millisecond)
		if err != nil {
			stats.addErr()
			time.Sleep(time.Duration(20+r.IntN(30)) * time.Millisecond)
			continue
		}
		switch {
		case out.Err != "" || req.Kind == opLeaseGrant || req.Kind == opLeaseRevoke:
		case req.Kind == opGet || (req.Kind == opTxn && !out.Succeeded):
			if out.Found {
				last[req.Key] = seen{out.KV.Mod, out.KV.Value}
			} else {
				last[req.Key] = seen{}
			}
		case req.Kind == opPut || req.Kind == opTxn:
			last[req.Key] = seen{out.Rev, req.Value}
		case req.Kind == opDelete:
			last[req.Key] = seen{}
		}
	}
}

type workloadStats struct {
	mu   sync.Mutex
	errs int
}

func (s *workloadStats) addErr() {
	s.mu.Lock()
	s.errs++
	s.mu.Unlock()
}

// watchEvent is one event of a watch response.
type watchEvent struct {
	Delete               bool
	Key, Value           string
	Mod, Create, Version int64
	Lease                int64
}

// watchResp is one watch response as a watcher received it.
type watchResp struct {
	Events     []watchEvent
	Progress   bool
	Rev        int64 // header revision
	Canceled   bool
	CompactRev int64
	Err        string
}

// watcher watches the key space from revision 1 on one member, with
// progress notifications (the member's periodic ones and requested
// ones), recording every response.
type watcher struct {
	member string
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	resps []watchResp
	last  int64 // highest revision the stream has shown all events up to
}

func startWatcher(member, endpoint string) (*watcher, error) {
	cli, err := newClient(endpoint)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{member: member, cli: cli, cancel: cancel, done: make(chan struct{})}
	ch := cli.Watch(ctx, "key", clientv3.WithPrefix(), clientv3.WithRev(1), clientv3.WithProgressNotify())
	go func() {
		defer close(w.done)
		for resp := range ch {
			wr := watchResp{Progress: resp.IsProgressNotify(), Rev: resp.Header.Revision, Canceled: resp.Canceled, CompactRev: resp.CompactRevision}
			if err := resp.Err(); err != nil {
				wr.Err = err.Error()
			}
			for _, ev := range resp.Events {
				e := watchEvent{Delete: ev.Type == mvccpb.DELETE, Key: string(ev.Kv.Key), Value: string(ev.Kv.Value),
					Mod: ev.Kv.ModRevision, Create: ev.Kv.CreateRevision, Version: ev.Kv.Version, Lease: ev.Kv.Lease}
				wr.Events = append(wr.Events, e)
			}
			w.mu.Lock()
			w.resps = append(w.resps, wr)
			if n := len(wr.Events); n > 0 {
				w.last = wr.Events[n-1].Mod
			} else if wr.Progress && wr.Rev > w.last {
				w.last = wr.Rev
			}
			w.mu.Unlock()
		}
	}()
	go func() {
		t := time.NewTicker(150 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				rctx, rcancel := context.WithTimeout(ctx, time.Second)
				_ = cli.RequestProgress(rctx)
				rcancel()
			}
		}
	}()
	return w, nil
}

// waitRev waits until the stream has caught up with rev.
func (w *watcher) waitRev(rev int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		last := w.last
		w.mu.Unlock()
		if last >= rev {
			return nil
		}
		select {
		case <-w.done:
			return fmt.Errorf("watcher on %s ended before revision %d", w.member, rev)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("watcher on %s did not reach revision %d within %v", w.member, rev, timeout)
}

func (w *watcher) stop() []watchResp {
	w.cancel()
	<-w.done
	w.cli.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.resps
}

// watchRange watches the key space on one member from revision from
// until it has shown every event up to to.
func watchRange(ctx context.Context, endpoint string, from, to int64) ([]watchEvent, error) {
	cli, err := newClient(endpoint)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var evs []watchEvent
	if from > to {
		return nil, nil
	}
	for resp := range cli.Watch(wctx, "key", clientv3.WithPrefix(), clientv3.WithRev(from)) {
		if err := resp.Err(); err != nil {
			return evs, err
		}
		for _, ev := range resp.Events {
			evs = append(evs, watchEvent{Delete: ev.Type == mvccpb.DELETE, Key: string(ev.Kv.Key), Value: string(ev.Kv.Value),
				Mod: ev.Kv.ModRevision, Create: ev.Kv.CreateRevision, Version: ev.Kv.Version, Lease: ev.Kv.Lease})
		}
		if len(evs) > 0 && evs[len(evs)-1].Mod >= to {
			return evs, nil
		}
	}
	return evs, fmt.Errorf("watch ended at %d events: %v", len(evs), wctx.Err())
}
