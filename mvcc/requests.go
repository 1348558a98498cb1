package mvcc

import (
	"bytes"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// The request API mirrors etcd's server: each call validates the request as
// etcd's gRPC layer does (api/v3rpc/key.go) and executes it as etcd's apply
// layer does (etcdserver/txn), on this store. Response headers carry only
// the revision; cluster, member and term belong to the server.

// ValidateRange checks r as etcd's checkRangeRequest.
func ValidateRange(r *pb.RangeRequest) error {
	if r == nil || len(r.Key) == 0 {
		return ErrEmptyKey
	}
	if _, ok := pb.RangeRequest_SortOrder_name[int32(r.SortOrder)]; !ok {
		return ErrInvalidSortOption
	}
	if _, ok := pb.RangeRequest_SortTarget_name[int32(r.SortTarget)]; !ok {
		return ErrInvalidSortOption
	}
	return nil
}

// ValidatePut checks r as etcd's checkPutRequest.
func ValidatePut(r *pb.PutRequest) error {
	if r == nil || len(r.Key) == 0 {
		return ErrEmptyKey
	}
	if r.IgnoreValue && len(r.Value) != 0 {
		return ErrValueProvided
	}
	if r.IgnoreLease && r.Lease != 0 {
		return ErrLeaseProvided
	}
	return nil
}

// ValidateDeleteRange checks r as etcd's checkDeleteRequest.
func ValidateDeleteRange(r *pb.DeleteRangeRequest) error {
	if r == nil || len(r.Key) == 0 {
		return ErrEmptyKey
	}
	return nil
}

// ValidateTxn checks r as etcd's gRPC Txn handler: operation count
// (checkTxnRequest) and duplicate keys (checkIntervals).
func ValidateTxn(r *pb.TxnRequest, maxTxnOps int) error {
	if err := checkTxnRequest(r, maxTxnOps); err != nil {
		return err
	}
	if _, _, err := checkIntervals(r.Success); err != nil {
		return err
	}
	if _, _, err := checkIntervals(r.Failure); err != nil {
		return err
	}
	return nil
}

func checkTxnRequest(r *pb.TxnRequest, maxTxnOps int) error {
	if r == nil {
		return ErrKeyNotFound // an empty union, as etcd answers for one
	}
	opc := max(len(r.Compare), len(r.Success), len(r.Failure))
	if opc > maxTxnOps {
		return ErrTooManyOps
	}
	for _, c := range r.Compare {
		if c == nil || len(c.Key) == 0 {
			return ErrEmptyKey
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, u := range ops {
			if err := checkRequestOp(u, maxTxnOps-opc); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkRequestOp(u *pb.RequestOp, maxTxnOps int) error {
	if u == nil {
		return ErrKeyNotFound
	}
	switch uv := u.Request.(type) {
	case *pb.RequestOp_RequestRange:
		return ValidateRange(uv.RequestRange)
	case *pb.RequestOp_RequestPut:
		return ValidatePut(uv.RequestPut)
	case *pb.RequestOp_RequestDeleteRange:
		return ValidateDeleteRange(uv.RequestDeleteRange)
	case *pb.RequestOp_RequestTxn:
		return checkTxnRequest(uv.RequestTxn, maxTxnOps)
	default:
		return ErrKeyNotFound
	}
}

// interval is etcd's string-affine interval: [begin, end), end "" = +inf;
// a point is [k, k+"\x00").
type interval struct{ begin, end string }

func (iv interval) containsPoint(k string) bool {
	return k >= iv.begin && (iv.end == "" || k < iv.end)
}

func pointInterval(k string) interval { return interval{k, k + "\x00"} }

type intervals []interval

func (ivs intervals) intersectsPoint(k string) bool {
	for _, iv := range ivs {
		if iv.containsPoint(k) {
			return true
		}
	}
	return false
}

// checkIntervals is etcd's duplicate-key check of one branch.
func checkIntervals(reqs []*pb.RequestOp) (map[string]struct{}, intervals, error) {
	var dels intervals
	for _, req := range reqs {
		tv, ok := req.Request.(*pb.RequestOp_RequestDeleteRange)
		if !ok || tv.RequestDeleteRange == nil {
			continue
		}
		d := tv.RequestDeleteRange
		if len(d.RangeEnd) != 0 {
			dels = append(dels, interval{string(d.Key), string(d.RangeEnd)})
		} else {
			dels = append(dels, pointInterval(string(d.Key)))
		}
	}
	puts := make(map[string]struct{})
	for _, req := range reqs {
		tv, ok := req.Request.(*pb.RequestOp_RequestTxn)
		if !ok {
			continue
		}
		putsThen, delsThen, err := checkIntervals(tv.RequestTxn.Success)
		if err != nil {
			return nil, dels, err
		}
		putsElse, delsElse, err := checkIntervals(tv.RequestTxn.Failure)
		if err != nil {
			return nil, dels, err
		}
		for k := range putsThen {
			if _, ok := puts[k]; ok {
				return nil, dels, ErrDuplicateKey
			}
			if dels.intersectsPoint(k) {
				return nil, dels, ErrDuplicateKey
			}
			puts[k] = struct{}{}
		}
		for k := range putsElse {
			if _, ok := puts[k]; ok {
				if _, isSafe := putsThen[k]; !isSafe {
					return nil, dels, ErrDuplicateKey
				}
			}
			if dels.intersectsPoint(k) {
				return nil, dels, ErrDuplicateKey
			}
			puts[k] = struct{}{}
		}
		dels = append(dels, delsThen...)
		dels = append(dels, delsElse...)
	}
	for _, req := range reqs {
		tv, ok := req.Request.(*pb.RequestOp_RequestPut)
		if !ok || tv.RequestPut == nil {
			continue
		}
		k := string(tv.RequestPut.Key)
		if _, ok := puts[k]; ok {
			return nil, dels, ErrDuplicateKey
		}
		if dels.intersectsPoint(k) {
			return nil, dels, ErrDuplicateKey
		}
		puts[k] = struct{}{}
	}
	return puts, dels, nil
}

func (s *Store) beginRead() (*txn, error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, ErrClosed
	}
	return &txn{s: s, v: s.b.View(), beginRev: s.currentRev}, nil
}

func (t *txn) endRead() {
	t.v.Release()
	t.s.mu.RUnlock()
}

// write runs fn as one write transaction; the current revision advances if
// fn changed something.
func (s *Store) write(fn func(t *txn) error) error {
	if s.b.ReadOnly() {
		return ErrReadOnly
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return s.b.Write(func(w *WriteTx) error {
		t := &txn{s: s, w: w, v: w.View(), beginRev: s.currentRev}
		err := fn(t)
		if t.changes > 0 {
			s.currentRev++
			if len(t.events) > 0 {
				s.hub.notify(s.currentRev, t.events)
			}
		}
		return err
	})
}

// Range answers r at r.Revision (0: the current revision).
func (s *Store) Range(r *pb.RangeRequest) (*pb.RangeResponse, error) {
	return s.rangeRead(r, true)
}

// RangePage answers r as Range does but stops reading at r.Limit, so Count
// is not the total of the range; More still tells whether keys follow.
// It is etcd's txn.Range without withTotalCount, which KV.RangeStream
// reads its chunks with.
func (s *Store) RangePage(r *pb.RangeRequest) (*pb.RangeResponse, error) {
	return s.rangeRead(r, false)
}

func (s *Store) rangeRead(r *pb.RangeRequest, withTotalCount bool) (*pb.RangeResponse, error) {
	if err := ValidateRange(r); err != nil {
		return nil, err
	}
	t, err := s.beginRead()
	if err != nil {
		return nil, err
	}
	defer t.endRead()
	return t.executeRange(r, withTotalCount)
}

// Put stores r.Key.
func (s *Store) Put(r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := ValidatePut(r); err != nil {
		return nil, err
	}
	var resp *pb.PutResponse
	err := s.write(func(t *txn) error {
		if err := t.checkLease(r); err != nil {
			return err
		}
		prev, err := t.checkAndGetPrevKV(r)
		if err != nil {
			return err
		}
		resp, err = t.doPut(r, prev)
		return err
	})
	return resp, err
}

// DeleteRange deletes [r.Key, r.RangeEnd).
func (s *Store) DeleteRange(r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if err := ValidateDeleteRange(r); err != nil {
		return nil, err
	}
	var resp *pb.DeleteRangeResponse
	err := s.write(func(t *txn) error {
		var err error
		resp, err = t.doDeleteRange(r)
		return err
	})
	return resp, err
}

func (t *txn) checkLease(p *pb.PutRequest) error {
	if p.Lease != 0 && !t.s.lessor.exists(p.Lease) {
		return ErrLeaseNotFound
	}
	return nil
}

func (t *txn) getPrevKV(p *pb.PutRequest) (*mvccpb.KeyValue, error) {
	if !(p.IgnoreValue || p.IgnoreLease || p.PrevKv) {
		return nil, nil
	}
	kvs, _, _, err := t.rangeKeys(p.Key, nil, rangeOpts{})
	if err != nil || len(kvs) == 0 {
		return nil, err
	}
	return kvs[0], nil
}

func (t *txn) checkAndGetPrevKV(p *pb.PutRequest) (*mvccpb.KeyValue, error) {
	prev, err := t.getPrevKV(p)
	if err != nil {
		return nil, err
	}
	if (p.IgnoreValue || p.IgnoreLease) && prev == nil {
		return nil, ErrKeyNotFound
	}
	return prev, nil
}

func (t *txn) doPut(p *pb.PutRequest, prev *mvccpb.KeyValue) (*pb.PutResponse, error) {
	resp := &pb.PutResponse{Header: &pb.ResponseHeader{}}
	val, lease := p.Value, p.Lease
	if (p.IgnoreValue || p.IgnoreLease) && prev == nil {
		return nil, ErrKeyNotFound // unreachable after checkTxn; never panic
	}
	if p.IgnoreValue {
		val = prev.Value
	}
	if p.IgnoreLease {
		lease = prev.Lease
	}
	if p.PrevKv && prev != nil {
		resp.PrevKv = prev
	}
	if err := t.put(p.Key, val, lease); err != nil {
		return nil, err
	}
	resp.Header.Revision = t.beginRev + 1
	return resp, nil
}

func (t *txn) doDeleteRange(d *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	resp := &pb.DeleteRangeResponse{Header: &pb.ResponseHeader{}}
	end := mkGteRange(d.RangeEnd)
	if d.PrevKv {
		kvs, _, _, err := t.rangeKeys(d.Key, end, rangeOpts{})
		if err != nil {
			return nil, err
		}
		resp.PrevKvs = kvs
		if resp.PrevKvs == nil {
			resp.PrevKvs = []*mvccpb.KeyValue{}
		}
	}
	resp.Deleted = t.deleteRange(d.Key, end)
	resp.Header.Revision = t.beginRev
	if t.changes > 0 {
		resp.Header.Revision++
	}
	return resp, nil
}

// Txn executes a transaction as etcd's txn.Txn.
func (s *Store) Txn(r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := ValidateTxn(r, s.opts.MaxTxnOps); err != nil {
		return nil, err
	}
	if isTxnReadonly(r) {
		t, err := s.beginRead()
		if err != nil {
			return nil, err
		}
		defer t.endRead()
		return t.runTxn(r)
	}
	var resp *pb.TxnResponse
	err := s.write(func(t *txn) error {
		var err error
		resp, err = t.runTxn(r)
		return err
	})
	return resp, err
}

func isTxnReadonly(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, u := range ops {
			if u.GetRequestRange() == nil {
				return false
			}
		}
	}
	return true
}

func (t *txn) runTxn(r *pb.TxnRequest) (*pb.TxnResponse, error) {
	path := t.compareToPath(r)
	if _, err := t.checkTxn(r, path); err != nil {
		return nil, err
	}
	resp, _ := newTxnResp(r, path)
	if _, err := t.executeTxn(r, path, resp); err != nil {
		// checkTxn rejected everything a write can fail on, so this is an
		// I/O or corruption error of a read.
		return nil, err
	}
	resp.Header.Revision = t.rev()
	return resp, nil
}

func newTxnResp(r *pb.TxnRequest, path []bool) (*pb.TxnResponse, int) {
	reqs := r.Success
	if !path[0] {
		reqs = r.Failure
	}
	resps := make([]*pb.ResponseOp, len(reqs))
	resp := &pb.TxnResponse{Responses: resps, Succeeded: path[0], Header: &pb.ResponseHeader{}}
	count := 0
	for i, req := range reqs {
		switch tv := req.Request.(type) {
		case *pb.RequestOp_RequestRange:
			resps[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{}}
		case *pb.RequestOp_RequestPut:
			resps[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{}}
		case *pb.RequestOp_RequestDeleteRange:
			resps[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{}}
		case *pb.RequestOp_RequestTxn:
			sub, n := newTxnResp(tv.RequestTxn, path[1:])
			resps[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: sub}}
			path = path[1+n:]
			count += n + 1
		}
	}
	return resp, count
}

func (t *txn) compareToPath(r *pb.TxnRequest) []bool {
	path := make([]bool, 1)
	ops := r.Success
	if path[0] = t.applyCompares(r.Compare); !path[0] {
		ops = r.Failure
	}
	for _, op := range ops {
		tv, ok := op.Request.(*pb.RequestOp_RequestTxn)
		if !ok || tv.RequestTxn == nil {
			continue
		}
		path = append(path, t.compareToPath(tv.RequestTxn)...)
	}
	return path
}

func (t *txn) applyCompares(cmps []*pb.Compare) bool {
	for _, c := range cmps {
		if !t.applyCompare(c) {
			return false
		}
	}
	return true
}

func (t *txn) applyCompare(c *pb.Compare) bool {
	kvs, _, _, err := t.rangeKeys(c.Key, mkGteRange(c.RangeEnd), rangeOpts{})
	if err != nil {
		return false
	}
	if len(kvs) == 0 {
		if c.Target == pb.Compare_VALUE {
			return false
		}
		return compareKV(c, &mvccpb.KeyValue{})
	}
	for _, kv := range kvs {
		if !compareKV(c, kv) {
			return false
		}
	}
	return true
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func compareKV(c *pb.Compare, kv *mvccpb.KeyValue) bool {
	var result int
	switch c.Target {
	case pb.Compare_VALUE:
		var v []byte
		if tv, _ := c.TargetUnion.(*pb.Compare_Value); tv != nil {
			v = tv.Value
		}
		result = bytes.Compare(kv.Value, v)
	case pb.Compare_CREATE:
		var rev int64
		if tv, _ := c.TargetUnion.(*pb.Compare_CreateRevision); tv != nil {
			rev = tv.CreateRevision
		}
		result = cmpInt64(kv.CreateRevision, rev)
	case pb.Compare_MOD:
		var rev int64
		if tv, _ := c.TargetUnion.(*pb.Compare_ModRevision); tv != nil {
			rev = tv.ModRevision
		}
		result = cmpInt64(kv.ModRevision, rev)
	case pb.Compare_VERSION:
		var rev int64
		if tv, _ := c.TargetUnion.(*pb.Compare_Version); tv != nil {
			rev = tv.Version
		}
		result = cmpInt64(kv.Version, rev)
	case pb.Compare_LEASE:
		var rev int64
		if tv, _ := c.TargetUnion.(*pb.Compare_Lease); tv != nil {
			rev = tv.Lease
		}
		result = cmpInt64(kv.Lease, rev)
	}
	switch c.Result {
	case pb.Compare_EQUAL:
		return result == 0
	case pb.Compare_NOT_EQUAL:
		return result != 0
	case pb.Compare_GREATER:
		return result > 0
	case pb.Compare_LESS:
		return result < 0
	}
	return true
}

func (t *txn) checkRange(r *pb.RangeRequest) error {
	switch {
	case r.Revision == 0:
		return nil
	case r.Revision > t.beginRev:
		return ErrFutureRev
	case r.Revision < t.s.compactRev:
		return ErrCompacted
	}
	return nil
}

// span is a key range as the index visits it (end nil: one key; empty:
// to the last key).
type span struct{ key, end []byte }

func (sp span) contains(k []byte) bool {
	if sp.end == nil {
		return bytes.Equal(k, sp.key)
	}
	return bytes.Compare(k, sp.key) >= 0 && (len(sp.end) == 0 || bytes.Compare(k, sp.end) < 0)
}

// checkTxn is etcd's checkTxn, plus one check etcd lacks: a put with
// ignore_value or ignore_lease on a key that a DeleteRange earlier in the
// same transaction removes (possible with a from-key delete, which etcd's
// duplicate-key check does not see) makes etcd panic while applying; here it
// is rejected up front with ErrKeyNotFound, as if the key did not exist.
func (t *txn) checkTxn(r *pb.TxnRequest, path []bool) (int, error) {
	var dels []span
	return t.checkTxnDels(r, path, &dels)
}

func (t *txn) checkTxnDels(r *pb.TxnRequest, path []bool, dels *[]span) (int, error) {
	count := 0
	reqs := r.Success
	if !path[0] {
		reqs = r.Failure
	}
	for _, req := range reqs {
		var err error
		switch tv := req.Request.(type) {
		case *pb.RequestOp_RequestRange:
			err = t.checkRange(tv.RequestRange)
		case *pb.RequestOp_RequestPut:
			p := tv.RequestPut
			if err = t.checkLease(p); err == nil {
				_, err = t.checkAndGetPrevKV(p)
			}
			if err == nil && (p.IgnoreValue || p.IgnoreLease) {
				for _, d := range *dels {
					if d.contains(p.Key) {
						err = ErrKeyNotFound
						break
					}
				}
			}
		case *pb.RequestOp_RequestDeleteRange:
			*dels = append(*dels, span{tv.RequestDeleteRange.Key, mkGteRange(tv.RequestDeleteRange.RangeEnd)})
		case *pb.RequestOp_RequestTxn:
			var n int
			n, err = t.checkTxnDels(tv.RequestTxn, path[1:], dels)
			count += n + 1
			path = path[n+1:]
		}
		if err != nil {
			return 0, err
		}
	}
	return count, nil
}

func (t *txn) executeTxn(r *pb.TxnRequest, path []bool, tresp *pb.TxnResponse) (int, error) {
	reqs := r.Success
	if !path[0] {
		reqs = r.Failure
	}
	count := 0
	for i, req := range reqs {
		respi := tresp.Responses[i].Response
		switch tv := req.Request.(type) {
		case *pb.RequestOp_RequestRange:
			resp, err := t.executeRange(tv.RequestRange, true)
			if err != nil {
				return 0, err
			}
			respi.(*pb.ResponseOp_ResponseRange).ResponseRange = resp
		case *pb.RequestOp_RequestPut:
			prev, err := t.getPrevKV(tv.RequestPut)
			if err != nil {
				return 0, err
			}
			resp, err := t.doPut(tv.RequestPut, prev)
			if err != nil {
				return 0, err
			}
			respi.(*pb.ResponseOp_ResponsePut).ResponsePut = resp
		case *pb.RequestOp_RequestDeleteRange:
			resp, err := t.doDeleteRange(tv.RequestDeleteRange)
			if err != nil {
				return 0, err
			}
			respi.(*pb.ResponseOp_ResponseDeleteRange).ResponseDeleteRange = resp
		case *pb.RequestOp_RequestTxn:
			resp := respi.(*pb.ResponseOp_ResponseTxn).ResponseTxn
			n, err := t.executeTxn(tv.RequestTxn, path[1:], resp)
			if err != nil {
				return 0, err
			}
			count += n + 1
			path = path[n+1:]
		}
	}
	return count, nil
}
