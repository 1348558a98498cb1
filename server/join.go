package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"

	"github.com/etckit/etckit/engine"
)

// joinInfo is what a member joining a running cluster learns from its
// peers' /members: the cluster ID, its own ID, and the members to answer
// until the membership reaches it through raft.
type joinInfo struct {
	clusterID, memberID uint64
	members             []engine.Member
}

// discoverCluster is etcd's GetClusterFromRemotePeers and
// ValidateClusterAndAssignIDs: read /members from the peers named in
// --initial-cluster (other than this member), then match every member the
// cluster has with one of --initial-cluster by peer URLs. The cluster's
// member for this member's URLs gives its ID (MemberAdd chose it).
//
// client is etcd's peer round-tripper (peer TLS for https peers).
func discoverCluster(ctx context.Context, cfg Config, client *http.Client) (*joinInfo, error) {
	local, _, err := engine.InitialMembers(cfg.Engine.InitialCluster, cfg.Engine.InitialClusterToken)
	if err != nil {
		return nil, err
	}
	var self *engine.Member
	var urls []string
	for i := range local {
		if local[i].Name == cfg.Engine.Name {
			self = &local[i]
			continue
		}
		urls = append(urls, local[i].PeerURLs...)
	}
	if self == nil {
		return nil, fmt.Errorf("server: member %q is not in --initial-cluster %q", cfg.Engine.Name, cfg.Engine.InitialCluster)
	}
	// etcd's getRemotePeerURLs asks the peers in sorted URL order.
	slices.Sort(urls)
	var lastErr error
	for _, u := range urls {
		info, err := getMembers(ctx, client, u)
		if err != nil {
			lastErr = err
			continue
		}
		if len(info.members) != len(local) {
			return nil, errors.New("member count is unequal")
		}
		for _, em := range info.members {
			found := false
			for j := range local {
				a, b := slices.Clone(em.PeerURLs), slices.Clone(local[j].PeerURLs)
				slices.Sort(a)
				slices.Sort(b)
				if slices.Equal(a, b) {
					local[j].ID = em.ID
					found = true
					break
				}
			}
			if !found {
				return nil, fmt.Errorf("PeerURLs: no match found for existing member (%x, %v), last resolver error (<nil>)", em.ID, em.PeerURLs)
			}
		}
		info.memberID = self.ID
		return info, nil
	}
	return nil, fmt.Errorf("could not retrieve cluster information from the given URLs: %v", lastErr)
}

func getMembers(ctx context.Context, client *http.Client, peerURL string) (*joinInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, peerURL+"/members", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/members: %d", peerURL, resp.StatusCode)
	}
	var ms []engine.Member
	if err := json.Unmarshal(b, &ms); err != nil {
		return nil, fmt.Errorf("GET %s/members: %w", peerURL, err)
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("GET %s/members: failed to get raft cluster member(s)", peerURL)
	}
	cid, err := strconv.ParseUint(resp.Header.Get("X-Etcd-Cluster-ID"), 16, 64)
	if err != nil {
		return nil, fmt.Errorf("GET %s/members: X-Etcd-Cluster-ID %q: %w", peerURL, resp.Header.Get("X-Etcd-Cluster-ID"), err)
	}
	return &joinInfo{clusterID: cid, members: ms}, nil
}
