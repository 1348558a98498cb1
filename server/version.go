package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/etckit/etckit/engine"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// monitorVersionInterval is etcd's: rafthttp.ConnWriteTimeout (5 s) less
// one second.
const monitorVersionInterval = 4 * time.Second

// DefaultDowngradeCheckTime is etcd's --downgrade-check-time default.
const DefaultDowngradeCheckTime = 5 * time.Second

// minClusterVersion is etcd's version.MinClusterVersion.
var minClusterVersion = engine.Version{Major: 3, Minor: 0}

// memberVersions is etcd's version.Versions, as /version answers it.
type memberVersions struct {
	Server  string `json:"etcdserver"`
	Cluster string `json:"etcdcluster"`
}

// membersVersions is etcd's getMembersVersions: every member's versions
// by hex ID, this member's own without asking, nil for a member whose
// /version could not be read on any of its peer URLs.
func membersVersions(ctx context.Context, log *slog.Logger, client *http.Client, members []engine.Member, local uint64, cv string) map[uint64]*memberVersions {
	vers := make(map[uint64]*memberVersions, len(members))
	for _, m := range members {
		if m.ID == local {
			c := "not_decided"
			if cv != "" {
				c = cv
			}
			vers[m.ID] = &memberVersions{Server: Version, Cluster: c}
			continue
		}
		v, err := getVersion(ctx, log, client, m)
		if err != nil {
			log.Warn("failed to get version", "remote-member-id", fmt.Sprintf("%x", m.ID), "error", err)
		}
		vers[m.ID] = v
	}
	return vers
}

// getVersion is etcd's: GET /version on each peer URL until one answers
// with JSON; the last error otherwise.
func getVersion(ctx context.Context, log *slog.Logger, client *http.Client, m engine.Member) (*memberVersions, error) {
	err := errors.New("member has no peer URL")
	for _, u := range m.PeerURLs {
		addr := u + "/version"
		var b []byte
		b, err = peerGet(ctx, client, addr)
		if err != nil {
			log.Warn("failed to reach the peer URL", "address", addr, "remote-member-id", fmt.Sprintf("%x", m.ID), "error", err)
			continue
		}
		var v memberVersions
		if err = json.Unmarshal(b, &v); err != nil {
			log.Warn("failed to unmarshal response", "address", addr, "remote-member-id", fmt.Sprintf("%x", m.ID), "error", err)
			continue
		}
		return &v, nil
	}
	return nil, err
}

// peerGet reads one peer endpoint's body, whatever the status (etcd's
// callers do not look at it), without following redirects.
func peerGet(ctx context.Context, client *http.Client, addr string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, addr, nil)
	if err != nil {
		return nil, err
	}
	_, b, err := peerDo(client, req)
	return b, err
}

// peerDo sends req to a peer without following redirects (etcd's peer
// clients use the last response) and reads at most 1 MiB of the answer.
func peerDo(client *http.Client, req *http.Request) (status int, body []byte, err error) {
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, err
}

// minimalServerVersion is etcd's membersMinimalServerVersion: the lowest
// server version, or false when one is unknown or not a version.
func (s *Server) minimalServerVersion(vers map[uint64]*memberVersions) (engine.Version, bool) {
	var min engine.Version
	found := false
	for id, ver := range vers {
		if ver == nil {
			return engine.Version{}, false
		}
		v, err := engine.ParseVersion(ver.Server)
		if err != nil {
			s.log.Warn("failed to parse server version of remote member", "remote-member-id", fmt.Sprintf("%x", id), "remote-member-version", ver.Server, "error", err)
			return engine.Version{}, false
		}
		if engine.ServerVersion.Less(v) {
			s.log.Warn("leader found higher-versioned member", "local-member-version", engine.ServerVersion.String(), "remote-member-id", fmt.Sprintf("%x", id), "remote-member-version", ver.Server)
		}
		if !found || v.Less(min) {
			min, found = v, true
		}
	}
	return min, found
}

// allowedDowngrade is etcd's allowedDowngradeVersion: one minor lower.
func allowedDowngrade(v engine.Version) engine.Version {
	return engine.Version{Major: v.Major, Minor: v.Minor - 1}
}

func isValidDowngrade(from, to engine.Version) bool { return to == allowedDowngrade(from) }

// isValidClusterVersionChange is etcd's IsValidClusterVersionChange on
// major.minor: one minor down, or up within the major.
func isValidClusterVersionChange(from, to engine.Version) bool {
	from, to = from.MajorMinor(), to.MajorMinor()
	return isValidDowngrade(from, to) || (from.Major == to.Major && from.Less(to))
}

// errMonitorDowngradeTarget is the monitor's, logged only.
var errMonitorDowngradeTarget = errors.New("invalid downgrade target")

// decideClusterVersion is etcd's Monitor.decideClusterVersion: with no
// cluster version, the lowest server version (3.0.0 when one is unknown);
// with one, nothing while a version is unknown, the downgrade target while
// a downgrade is enabled, and the lowest server version when higher.
// ok false: leave the cluster version alone.
func (s *Server) decideClusterVersion(cv string, d engine.DowngradeInfo, vers map[uint64]*memberVersions) (engine.Version, bool, error) {
	minV, known := s.minimalServerVersion(vers)
	if cv == "" {
		if known {
			return minV, true, nil
		}
		return minClusterVersion, true, nil
	}
	cur, err := engine.ParseVersion(cv)
	if err != nil {
		return engine.Version{}, false, err
	}
	if !known {
		return engine.Version{}, false, nil
	}
	if d.Enabled {
		target, err := engine.ParseVersion(d.TargetVersion)
		if err != nil {
			return engine.Version{}, false, err
		}
		if target == cur {
			return engine.Version{}, false, nil
		}
		if !isValidDowngrade(cur, target) {
			s.log.Error("Cannot downgrade from cluster-version to downgrade-target", "downgrade-target", d.TargetVersion, "cluster-version", cur.String())
			return engine.Version{}, false, errMonitorDowngradeTarget
		}
		if !isValidDowngrade(minV, target) {
			s.log.Error("Cannot downgrade from minimal-server-version to downgrade-target", "downgrade-target", d.TargetVersion, "minimal-server-version", minV.String())
			return engine.Version{}, false, errMonitorDowngradeTarget
		}
		return target, true, nil
	}
	if cur.Less(minV) && isValidClusterVersionChange(cur, minV) {
		return minV, true, nil
	}
	return engine.Version{}, false, nil
}

// versionsMatchTarget is etcd's: every member runs the target's
// major.minor.
func (s *Server) versionsMatchTarget(target engine.Version, vers map[uint64]*memberVersions) bool {
	target = target.MajorMinor()
	for id, ver := range vers {
		if ver == nil {
			return false
		}
		v, err := engine.ParseVersion(ver.Server)
		if err != nil {
			s.log.Warn("failed to parse server version of remote member", "remote-member-id", fmt.Sprintf("%x", id), "remote-member-version", ver.Server, "error", err)
			return false
		}
		if v.MajorMinor() != target {
			s.log.Warn("remotes server has mismatching etcd version", "remote-member-id", fmt.Sprintf("%x", id), "current-server-version", v.MajorMinor().String(), "target-version", target.String())
			return false
		}
	}
	return true
}

// updateClusterVersionIfNeeded is etcd's UpdateClusterVersionIfNeeded and
// updateClusterVersionV3, run by the leader.
func (s *Server) updateClusterVersionIfNeeded() {
	ctx, cancel := context.WithTimeout(context.Background(), s.requestTimeout())
	defer cancel()
	cv := s.eng.ClusterVersion()
	vers := membersVersions(ctx, s.log, s.peerClient, s.eng.Members(), s.ID(), cv)
	v, ok, err := s.decideClusterVersion(cv, s.eng.DowngradeInfo(), vers)
	if err != nil {
		s.log.Error("Failed to monitor cluster version", "error", err)
	}
	if !ok {
		return
	}
	ver := v.MajorMinor().String()
	if cv == "" {
		s.log.Info("setting up initial cluster version using v3 API", "cluster-version", ver)
	} else {
		s.log.Info("updating cluster version using v3 API", "from", clusterText(cv), "to", ver)
	}
	if _, err := s.propose(ctx, &etcdserverpb.InternalRaftRequest{ClusterVersionSet: &membershippb.ClusterVersionSetRequest{Ver: ver}}); err != nil {
		if errors.Is(err, rpctypes.ErrGRPCStopped) {
			s.log.Warn("aborting cluster version update; server is stopped", "error", err)
			return
		}
		s.log.Warn("failed to update cluster version", "error", err)
		return
	}
	s.log.Info("cluster version is updated", "cluster-version", ver)
}

// clusterText is etcd's version.Cluster: the first two dot-separated
// parts ("3.6.0" → "3.6"), as the Downgrade RPC answers the cluster
// version.
func clusterText(v string) string {
	parts := strings.Split(v, ".")
	if len(parts) <= 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}

// cancelDowngradeIfNeeded is etcd's CancelDowngradeIfNeeded, run by the
// leader every --downgrade-check-time: once every member runs the target,
// the downgrade is over.
func (s *Server) cancelDowngradeIfNeeded() {
	d := s.eng.DowngradeInfo()
	if !d.Enabled {
		return
	}
	target, err := engine.ParseVersion(d.TargetVersion)
	if err != nil {
		return // refused when loaded or applied
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.requestTimeout())
	defer cancel()
	if !s.versionsMatchTarget(target, membersVersions(ctx, s.log, s.peerClient, s.eng.Members(), s.ID(), s.eng.ClusterVersion())) {
		return
	}
	s.log.Info("the cluster has been downgraded", "cluster-version", d.TargetVersion)
	if err := s.proposeDowngradeInfo(ctx, false, ""); err != nil {
		s.log.Warn("failed to cancel downgrade", "error", err)
	}
}

func (s *Server) proposeDowngradeInfo(ctx context.Context, enabled bool, ver string) error {
	_, err := s.propose(ctx, &etcdserverpb.InternalRaftRequest{DowngradeInfoSet: &membershippb.DowngradeInfoSetRequest{Enabled: enabled, Ver: ver}})
	return err
}

// updateStorageVersion is etcd's UpdateStorageVersionIfNeeded, on every
// member: meta/storageVersion follows the cluster version.
func (s *Server) updateStorageVersion() {
	from, to, changed, err := s.eng.UpdateStorageVersion()
	if err != nil {
		s.log.Error("failed to update storage version", "cluster-version", s.eng.ClusterVersion(), "error", err)
		return
	}
	if !changed {
		return
	}
	if from != "" {
		s.log.Info("cluster version differs from storage version.", "cluster-version", s.eng.ClusterVersion(), "storage-version", from)
	}
	s.log.Info("updated storage version", "new-storage-version", to)
	if d := s.eng.DowngradeInfo(); d.Enabled {
		s.log.Info("The server is ready to downgrade", "target-version", d.TargetVersion, "server-version", Version)
	}
}

// versionLoop runs etcd's three version monitors: the leader's cluster
// version (every 4 s and at the first commit of each of its terms), the
// storage version on every member (every 4 s and when the cluster version
// changed), and the leader's downgrade check (--downgrade-check-time).
func (s *Server) versionLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.TickInterval)
	defer t.Stop()
	var lastCV, lastStorage, lastDowngrade time.Time
	var ledTerm uint64
	prevCV := s.eng.ClusterVersion()
	for {
		select {
		case <-t.C:
		case <-s.stopc:
			s.log.Info("server has stopped; stopping cluster version's monitor")
			return
		}
		now := time.Now()
		if cv := s.eng.ClusterVersion(); cv != prevCV || now.Sub(lastStorage) >= monitorVersionInterval {
			prevCV, lastStorage = cv, now
			s.updateStorageVersion()
		}
		if s.Leader() != s.ID() {
			ledTerm = 0
			continue
		}
		// etcd's firstCommitInTerm: this leader applied an entry of its
		// own term.
		term := s.Term()
		_, appliedTerm := s.eng.Applied()
		first := ledTerm != term && appliedTerm == term
		if first || now.Sub(lastCV) >= monitorVersionInterval {
			if first {
				ledTerm = term
			}
			lastCV = now
			s.updateClusterVersionIfNeeded()
		}
		if dt := s.cfg.DowngradeCheckTime; dt > 0 && time.Since(lastDowngrade) >= dt {
			lastDowngrade = time.Now()
			s.cancelDowngradeIfNeeded()
		}
	}
}

// Downgrade errors, etcd's.
var (
	errWrongDowngradeVersionFormat   = rpctypes.ErrGRPCWrongDowngradeVersionFormat
	errInvalidDowngradeTargetVersion = rpctypes.ErrGRPCInvalidDowngradeTargetVersion
	errClusterVersionUnavailable     = rpctypes.ErrGRPCClusterVersionUnavailable
	errDowngradeInProcess            = rpctypes.ErrGRPCDowngradeInProcess
	errNoInflightDowngrade           = rpctypes.ErrGRPCNoInflightDowngrade
	errUnknownMethod                 = errors.New("etcdserver: unknown method")
)

// convertToClusterVersion is etcd's: "3.6.1" or "3.6", kept as 3.6.0.
func convertToClusterVersion(v string) (engine.Version, error) {
	ver, err := engine.ParseVersion(v)
	if err != nil {
		if ver, err = engine.ParseVersion(v + ".0"); err != nil {
			return engine.Version{}, errWrongDowngradeVersionFormat
		}
	}
	return ver.MajorMinor(), nil
}

// downgrade is etcd's EtcdServer.Downgrade (VALIDATE, ENABLE, CANCEL).
func (s *Server) downgrade(ctx context.Context, r *etcdserverpb.DowngradeRequest) (*etcdserverpb.DowngradeResponse, error) {
	switch r.GetAction() {
	case etcdserverpb.DowngradeRequest_VALIDATE:
		target, err := convertToClusterVersion(r.GetVersion())
		if err != nil {
			return nil, err
		}
		cv := s.eng.ClusterVersion()
		if cv == "" {
			return nil, errClusterVersionUnavailable
		}
		resp := &etcdserverpb.DowngradeResponse{Version: clusterText(cv)}
		if err := s.downgradeValidate(ctx, target); err != nil {
			return nil, err
		}
		return resp, nil
	case etcdserverpb.DowngradeRequest_ENABLE:
		target, err := convertToClusterVersion(r.GetVersion())
		if err != nil {
			s.log.Warn("reject downgrade request", "error", err)
			return nil, err
		}
		if err := s.downgradeValidate(ctx, target); err != nil {
			s.log.Warn("reject downgrade request", "error", err)
			return nil, err
		}
		if err := s.proposeDowngradeInfo(ctx, true, target.String()); err != nil {
			s.log.Warn("reject downgrade request", "error", err)
			return nil, err
		}
		return &etcdserverpb.DowngradeResponse{Version: clusterText(s.eng.ClusterVersion())}, nil
	case etcdserverpb.DowngradeRequest_CANCEL:
		// etcd logs a failed cancel and answers the cluster version all
		// the same.
		if err := s.downgradeCancel(ctx); err != nil {
			s.log.Warn("failed to cancel downgrade", "error", err)
		}
		return &etcdserverpb.DowngradeResponse{Version: clusterText(s.eng.ClusterVersion())}, nil
	}
	return nil, errUnknownMethod
}

// downgradeValidate is etcd's Manager.DowngradeValidate: after a
// linearizable read, the target must be one minor below the cluster
// version and no downgrade may be enabled.
func (s *Server) downgradeValidate(ctx context.Context, target engine.Version) error {
	if err := s.linearizableReadNotify(ctx); err != nil {
		return err
	}
	cv, err := engine.ParseVersion(s.eng.ClusterVersion())
	if err != nil {
		// etcd dereferences a nil cluster version here.
		return errClusterVersionUnavailable
	}
	if target != allowedDowngrade(cv) {
		return errInvalidDowngradeTargetVersion
	}
	if s.eng.DowngradeInfo().Enabled {
		return errDowngradeInProcess
	}
	return nil
}

func (s *Server) downgradeCancel(ctx context.Context) error {
	if err := s.linearizableReadNotify(ctx); err != nil {
		return err
	}
	if !s.eng.DowngradeInfo().Enabled {
		return errNoInflightDowngrade
	}
	return s.proposeDowngradeInfo(ctx, false, "")
}

// errIncompatibleCluster is etcd's text when checkClusterCompatible fails.
var errIncompatibleCluster = errors.New("incompatible with current running cluster")

// checkClusterCompatible is etcd's isCompatibleWithCluster for a member
// joining a running cluster: the other members' cluster versions (those
// that answer /version) must lie in [3.0, own major.minor], or be exactly
// one minor above it while a downgrade is enabled, and one must answer.
func checkClusterCompatible(ctx context.Context, log *slog.Logger, client *http.Client, members []engine.Member, local uint64) bool {
	vers := membersVersions(ctx, log, client, members, local, "")
	minV, maxV := allowedVersionRange(downgradeEnabledFromPeers(ctx, log, client, members, local))
	ok := false
	for id, v := range vers {
		if id == local || v == nil {
			continue
		}
		cv, err := engine.ParseVersion(v.Cluster)
		if err != nil {
			log.Warn("failed to parse cluster version of remote member", "remote-member-id", fmt.Sprintf("%x", id), "remote-member-cluster-version", v.Cluster, "error", err)
			continue
		}
		if cv.Less(minV) {
			log.Warn("cluster version of remote member is not compatible; too low", "remote-member-id", fmt.Sprintf("%x", id), "remote-member-cluster-version", cv.String(), "minimum-cluster-version-supported", minV.String())
			return false
		}
		if maxV.Less(cv) {
			log.Warn("cluster version of remote member is not compatible; too high", "remote-member-id", fmt.Sprintf("%x", id), "remote-member-cluster-version", cv.String(), "maximum-cluster-version-supported", maxV.String())
			return false
		}
		ok = true
	}
	return ok
}

// allowedVersionRange is etcd's: [3.0, own] or, during a downgrade,
// [own+1, own+1].
func allowedVersionRange(downgradeEnabled bool) (minV, maxV engine.Version) {
	minV, maxV = minClusterVersion, engine.ServerVersion.MajorMinor()
	if downgradeEnabled {
		maxV.Minor++
		minV = maxV
	}
	return minV, maxV
}

// downgradeEnabledFromPeers is etcd's getDowngradeEnabledFromRemotePeers:
// the first member that answers /downgrade/enabled; false if none does.
func downgradeEnabledFromPeers(ctx context.Context, log *slog.Logger, client *http.Client, members []engine.Member, local uint64) bool {
	for _, m := range members {
		if m.ID == local {
			continue
		}
		err := errors.New("member has no peer URL")
		for _, u := range m.PeerURLs {
			addr := u + "/downgrade/enabled"
			var b []byte
			if b, err = peerGet(ctx, client, addr); err != nil {
				log.Warn("failed to reach the peer URL", "address", addr, "remote-member-id", fmt.Sprintf("%x", m.ID), "error", err)
				continue
			}
			var enabled bool
			if enabled, err = strconv.ParseBool(string(b)); err != nil {
				log.Warn("failed to convert response", "address", addr, "remote-member-id", fmt.Sprintf("%x", m.ID), "error", err)
				continue
			}
			return enabled
		}
		log.Warn("failed to get downgrade enabled status", "remote-member-id", fmt.Sprintf("%x", m.ID), "error", err)
	}
	return false
}
