package mvcc

// Stats are the store's counts that etcd exports as metrics
// (etcd_debugging_mvcc_keys_total, _watch_stream_total, _watcher_total,
// _slow_watcher_total). mvcc knows no metrics library: the server reads
// these when it is scraped.
type Stats struct {
	// Keys are the keys that exist at the current revision.
	Keys int64
	// WatchStreams are the open watch streams, Watchers their watchers,
	// SlowWatchers those not yet caught up (unsynced or victims).
	WatchStreams, Watchers, SlowWatchers int64
}

// Stats returns the store's counts.
func (s *Store) Stats() Stats {
	var st Stats
	s.mu.RLock()
	st.Keys = s.live
	h := s.hub
	s.mu.RUnlock()
	st.Watchers = h.n.Load()
	h.mu.Lock()
	st.WatchStreams = int64(len(h.streams))
	st.SlowWatchers = int64(len(h.unsynced) + len(h.victims))
	h.mu.Unlock()
	return st
}
