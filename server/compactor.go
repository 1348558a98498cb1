package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/etckit/etckit/mvcc"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// AutoCompaction is etcd's --auto-compaction-mode and
// --auto-compaction-retention: Period for "periodic" (keep that much
// history), Revisions for "revision" (keep that many revisions). Zero
// values: no auto compaction.
type AutoCompaction struct {
	Mode      string
	Period    time.Duration
	Revisions int64
}

// parseAutoCompactionRetention is etcd's parseCompactionRetention: a bare
// integer is hours (periodic) or revisions (revision); else a duration.
func parseAutoCompactionRetention(mode, retention string) (AutoCompaction, error) {
	ac := AutoCompaction{Mode: mode}
	if h, err := strconv.Atoi(retention); err == nil && h >= 0 {
		if mode == "revision" {
			ac.Revisions = int64(h)
		} else {
			ac.Period = time.Duration(h) * time.Hour
		}
		return ac, nil
	}
	d, err := time.ParseDuration(retention)
	if err != nil {
		return AutoCompaction{}, fmt.Errorf("error parsing CompactionRetention: %w", err)
	}
	if mode == "revision" {
		ac.Revisions = int64(d)
	} else {
		ac.Period = d
	}
	return ac, nil
}

// enabled is etcd's "retention > 0".
func (a AutoCompaction) enabled() bool { return a.Period > 0 || a.Revisions > 0 }

// autoCompactRevInterval is etcd's v3compactor revInterval.
const autoCompactRevInterval = 5 * time.Minute

// compactorLoop is etcd's v3compactor, run on every member and acting
// only while this member leads (etcd pauses it on followers):
// "periodic" compacts to the revision seen one period ago, first after a
// period and then every min(period, 1h), sampling the revision every
// tenth of that; "revision" compacts to the current revision less the
// retention every 5 minutes.
func (s *Server) compactorLoop() {
	defer s.wg.Done()
	ac := s.cfg.AutoCompaction
	compact := func(rev int64) error {
		ctx, cancel := context.WithTimeout(context.Background(), s.requestTimeout())
		defer cancel()
		_, err := s.propose(withRoot(ctx), &pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: rev}})
		if errors.Is(err, mvcc.ErrCompacted) {
			err = nil
		}
		return err
	}
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-s.stopc:
			return false
		}
	}
	if ac.Mode == "revision" {
		prev := int64(0)
		for wait(autoCompactRevInterval) {
			if s.Leader() != s.ID() {
				continue
			}
			rev := s.eng.Store().Rev() - ac.Revisions
			if rev <= 0 || rev == prev {
				continue
			}
			s.log.Info("starting auto revision compaction", "revision", rev, "revision-compaction-retention", ac.Revisions)
			start := time.Now()
			if err := compact(rev); err != nil {
				s.log.Warn("failed auto revision compaction", "revision", rev, "revision-compaction-retention", ac.Revisions,
					"retry-interval", autoCompactRevInterval.String(), "error", err)
				continue
			}
			prev = rev
			s.log.Info("completed auto revision compaction", "revision", rev, "revision-compaction-retention", ac.Revisions, "took", time.Since(start).String())
		}
		return
	}
	period := ac.Period
	compactInterval := min(period, time.Hour)
	retryInterval := compactInterval / 10
	retentions := int(period/retryInterval) + 1
	var revs []int64
	lastRevision := int64(0)
	lastSuccess := time.Now()
	baseInterval := period
	for {
		revs = append(revs, s.eng.Store().Rev())
		if len(revs) > retentions {
			revs = revs[1:] // revs[0] is the revision one period ago
		}
		if !wait(retryInterval) {
			return
		}
		if s.Leader() != s.ID() {
			continue
		}
		rev := revs[0]
		if time.Since(lastSuccess) < baseInterval || rev == lastRevision {
			continue
		}
		if baseInterval == period {
			baseInterval = compactInterval
		}
		s.log.Info("starting auto periodic compaction", "revision", rev, "compact-period", period.String())
		start := time.Now()
		if err := compact(rev); err != nil {
			s.log.Warn("failed auto periodic compaction", "revision", rev, "compact-period", period.String(),
				"retry-interval", retryInterval.String(), "error", err)
			continue
		}
		lastRevision, lastSuccess = rev, time.Now()
		s.log.Info("completed auto periodic compaction", "revision", rev, "compact-period", period.String(), "took", time.Since(start).String())
	}
}

// maybeDefragBackend is etcd's (etcdserver/bootstrap.go): with
// --bootstrap-defrag-threshold-megabytes, defragment the db at start if
// that frees at least the threshold.
func (s *Server) maybeDefragBackend() error {
	size, inUse := s.dbSize()
	threshold := s.cfg.BootstrapDefragThresholdMegabytes * 1024 * 1024
	if uint(size-inUse) < threshold {
		s.log.Info("Skipping defragmentation",
			"current-db-size-bytes", size, "current-db-size", humanBytes(uint64(size)),
			"current-db-size-in-use-bytes", inUse, "current-db-size-in-use", humanBytes(uint64(inUse)),
			"bootstrap-defrag-threshold-bytes", threshold, "bootstrap-defrag-threshold", humanBytes(uint64(threshold)))
		return nil
	}
	s.log.Info("starting defragment")
	st, err := s.eng.Store().Backend().Defrag()
	if err != nil {
		return fmt.Errorf("server: bootstrap defragmentation: %w", err)
	}
	s.log.Info("finished defragment", "size-before", st.SizeBefore, "size-after", st.SizeAfter, "took", st.Took)
	return nil
}

// humanBytes is go-humanize's Bytes, which etcd's logs use (SI units).
func humanBytes(n uint64) string {
	if n < 10 {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"B", "kB", "MB", "GB", "TB", "PB", "EB"}
	e := math.Floor(math.Log(float64(n)) / math.Log(1000))
	val := math.Floor(float64(n)/math.Pow(1000, e)*10+0.5) / 10
	if val < 10 {
		return fmt.Sprintf("%.1f %s", val, units[int(e)])
	}
	return fmt.Sprintf("%.0f %s", val, units[int(e)])
}
