package engine

import (
	"crypto/sha1"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Member is one cluster member, serialised as etcd's membership.Member JSON:
// {"id":<decimal>,"peerURLs":[..],"isLearner":true?,"name":".."?,"clientURLs":[..]?}.
// The same JSON is the context of a ConfChange and the value of the members
// bucket (wire format: never change the field names or omitempty rules).
type Member struct {
	ID         uint64   `json:"id"`
	PeerURLs   []string `json:"peerURLs"`
	IsLearner  bool     `json:"isLearner,omitempty"`
	Name       string   `json:"name,omitempty"`
	ClientURLs []string `json:"clientURLs,omitempty"`
}

// confChangeContext is the context of a ConfChange: a Member plus the
// promote flag of a learner promotion.
type confChangeContext struct {
	Member
	IsPromote bool `json:"isPromote"`
}

// MemberID derives a member's ID as etcd does (membership.computeMemberID):
// the first 8 bytes, big-endian, of SHA-1 over the sorted peer URLs
// concatenated, the cluster token and (for a runtime member-add only) the
// Unix time in seconds as decimal text; now == nil leaves the time out.
func MemberID(peerURLs []string, token string, now *int64) uint64 {
	urls := slices.Clone(peerURLs)
	sort.Strings(urls)
	b := []byte(strings.Join(urls, ""))
	b = append(b, token...)
	if now != nil {
		b = append(b, strconv.FormatInt(*now, 10)...)
	}
	h := sha1.Sum(b)
	return binary.BigEndian.Uint64(h[:8])
}

// ClusterID derives the cluster ID as etcd does (RaftCluster.genID): the first
// 8 bytes of SHA-1 over the member IDs in ascending order, each 8 bytes
// big-endian.
func ClusterID(ids []uint64) uint64 {
	s := slices.Clone(ids)
	slices.Sort(s)
	b := make([]byte, 0, 8*len(s))
	for _, id := range s {
		b = binary.BigEndian.AppendUint64(b, id)
	}
	h := sha1.Sum(b)
	return binary.BigEndian.Uint64(h[:8])
}

// ParseInitialCluster parses --initial-cluster ("n1=http://a:2380,n1=http://b:2380,n2=...")
// into the peer URLs of each name, in the order first seen.
func ParseInitialCluster(s string) (names []string, urls map[string][]string, err error) {
	urls = make(map[string][]string)
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, u, ok := strings.Cut(part, "=")
		if !ok || name == "" || u == "" {
			return nil, nil, fmt.Errorf("engine: --initial-cluster %q: element %q is not name=url", s, part)
		}
		if _, err := url.Parse(u); err != nil {
			return nil, nil, fmt.Errorf("engine: --initial-cluster %q: %w", s, err)
		}
		if _, seen := urls[name]; !seen {
			names = append(names, name)
		}
		urls[name] = append(urls[name], u)
	}
	if len(names) == 0 {
		return nil, nil, fmt.Errorf("engine: --initial-cluster %q names no member", s)
	}
	return names, urls, nil
}

// InitialMembers returns the members of a new cluster from --initial-cluster
// and --initial-cluster-token, sorted by ID, with the cluster ID, refusing
// duplicate URLs as etcd does.
func InitialMembers(initialCluster, token string) ([]Member, uint64, error) {
	names, urls, err := ParseInitialCluster(initialCluster)
	if err != nil {
		return nil, 0, err
	}
	seen := make(map[string]string)
	var ms []Member
	var ids []uint64
	for _, n := range names {
		for _, u := range urls[n] {
			if other, dup := seen[u]; dup {
				return nil, 0, fmt.Errorf("engine: --initial-cluster has duplicate url %s (members %s and %s)", u, other, n)
			}
			seen[u] = n
		}
		pu := slices.Clone(urls[n])
		sort.Strings(pu)
		m := Member{ID: MemberID(pu, token, nil), PeerURLs: pu, Name: n}
		ms = append(ms, m)
		ids = append(ids, m.ID)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
	return ms, ClusterID(ids), nil
}

func marshalMember(m Member) []byte {
	b, _ := json.Marshal(m) // a struct of strings and integers cannot fail
	return b
}

func memberKey(id uint64) []byte { return []byte(strconv.FormatUint(id, 16)) }
