package snap

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The v2 store JSON (raftpb.Snapshot.Data). etcd 3.6 and 3.7 write a
// fresh store that holds only the membership (GetMembershipInfoInV2Format:
// v2store.New("/0", "/1") then RaftCluster.Store); etcd 3.5 writes its
// whole v2 store, which may also hold v2 user keys under /1 and v2 auth
// under /2. The structs below mirror etcd's v2store types field for field
// (names, order, JSON tags), so encoding/json produces the same bytes.

// Store paths (etcd's membership/storev2.go).
const (
	storeClusterPrefix = "/0"
	storeKeysPrefix    = "/1"
	storeAuthPrefix    = "/2"
	membersPrefix      = "/0/members"
	removedPrefix      = "/0/removed_members"
	versionKey         = "/0/version"
	raftAttrsName      = "raftAttributes"
	attrsName          = "attributes"

	v2StoreVersion      = 2    // store.CurrentVersion
	v2EventHistoryLimit = 1000 // newWatchHub(1000)

	// MaxV2StoreSize bounds the JSON DecodeV2Store accepts.
	MaxV2StoreSize = MaxFileSize
)

// Member is one cluster member as the v2 store records it.
type Member struct {
	ID        uint64
	PeerURLs  []string // raftAttributes.peerURLs
	IsLearner bool     // raftAttributes.isLearner
	Name      string   // attributes.name
	// ClientURLs is attributes.clientURLs. etcd writes the attributes key
	// only when ClientURLs is non-nil (a member that has published itself);
	// DecodeV2Store returns a non-nil (maybe empty) slice when the key
	// exists, so that encoding what was decoded gives the same bytes.
	ClientURLs []string
}

// Membership is the cluster state kept under /0.
type Membership struct {
	// Members in the order they are added to the store. etcd iterates a Go
	// map here, so its order is random; DecodeV2Store returns them in the
	// order of their creation index, which re-encodes to the same bytes.
	Members []Member
	// Removed member IDs (/0/removed_members), in the order they are added.
	Removed []uint64
	// Version is the cluster version (/0/version), e.g. "3.6.0"; "" when
	// the store has none.
	Version string
}

// V2Store is what DecodeV2Store reports about a v2 store JSON.
type V2Store struct {
	Membership
	// CurrentIndex is the store's index (not a raft index).
	CurrentIndex uint64
	// KeyNodes is the number of keys (leaf nodes) under /1: v2 user data a
	// v3.5 store may hold. They are ignored (etcd 3.6+ refuses to start
	// while /1 has children, see --v2-deprecation).
	KeyNodes int
	// AuthNodes is the number of keys under /2 (v3.5 v2 auth); ignored.
	// An /2 whose sub-directories are all empty has AuthNodes counting only
	// its direct keys (e.g. /2/enabled).
	AuthNodes int
	// Other lists top-level directories other than /0, /1 and /2.
	Other []string
}

// v2Node mirrors v2store.node.
type v2Node struct {
	Path          string
	CreatedIndex  uint64
	ModifiedIndex uint64
	ExpireTime    time.Time
	Value         string
	Children      map[string]*v2Node
}

// v2NodeExtern mirrors v2store.NodeExtern (only what creates emit).
type v2NodeExtern struct {
	Key           string          `json:"key,omitempty"`
	Value         *string         `json:"value,omitempty"`
	Dir           bool            `json:"dir,omitempty"`
	Expiration    *time.Time      `json:"expiration,omitempty"`
	TTL           int64           `json:"ttl,omitempty"`
	Nodes         []*v2NodeExtern `json:"nodes,omitempty"`
	ModifiedIndex uint64          `json:"modifiedIndex,omitempty"`
	CreatedIndex  uint64          `json:"createdIndex,omitempty"`
}

// v2Event mirrors v2store.Event.
type v2Event struct {
	Action   string        `json:"action"`
	Node     *v2NodeExtern `json:"node,omitempty"`
	PrevNode *v2NodeExtern `json:"prevNode,omitempty"`
	Refresh  bool          `json:"refresh,omitempty"`
}

type v2EventQueue struct {
	Events   []*v2Event
	Size     int
	Front    int
	Back     int
	Capacity int
}

type v2EventHistory struct {
	Queue      v2EventQueue
	StartIndex uint64
	LastIndex  uint64
}

type v2WatcherHub struct {
	EventHistory *v2EventHistory
}

// v2Stats mirrors v2store.Stats.
type v2Stats struct {
	GetSuccess              uint64 `json:"getsSuccess"`
	GetFail                 uint64 `json:"getsFail"`
	SetSuccess              uint64 `json:"setsSuccess"`
	SetFail                 uint64 `json:"setsFail"`
	DeleteSuccess           uint64 `json:"deleteSuccess"`
	DeleteFail              uint64 `json:"deleteFail"`
	UpdateSuccess           uint64 `json:"updateSuccess"`
	UpdateFail              uint64 `json:"updateFail"`
	CreateSuccess           uint64 `json:"createSuccess"`
	CreateFail              uint64 `json:"createFail"`
	CompareAndSwapSuccess   uint64 `json:"compareAndSwapSuccess"`
	CompareAndSwapFail      uint64 `json:"compareAndSwapFail"`
	CompareAndDeleteSuccess uint64 `json:"compareAndDeleteSuccess"`
	CompareAndDeleteFail    uint64 `json:"compareAndDeleteFail"`
	ExpireCount             uint64 `json:"expireCount"`
	Watchers                uint64 `json:"watchers"`
}

// v2Store mirrors v2store.store.
type v2Store struct {
	Root           *v2Node
	WatcherHub     *v2WatcherHub
	CurrentIndex   uint64
	Stats          *v2Stats
	CurrentVersion int
}

// v2RaftAttributes and v2Attributes mirror membership.RaftAttributes and
// membership.Attributes.
type v2RaftAttributes struct {
	PeerURLs  []string `json:"peerURLs"`
	IsLearner bool     `json:"isLearner,omitempty"`
}

type v2Attributes struct {
	Name       string   `json:"name,omitempty"`
	ClientURLs []string `json:"clientURLs,omitempty"`
}

func newV2Dir(p string, index uint64) *v2Node {
	return &v2Node{Path: p, CreatedIndex: index, ModifiedIndex: index, Children: map[string]*v2Node{}}
}

// newV2Store is v2store.New(namespaces...).
func newV2Store(namespaces ...string) *v2Store {
	s := &v2Store{
		Root: newV2Dir("/", 0),
		WatcherHub: &v2WatcherHub{EventHistory: &v2EventHistory{Queue: v2EventQueue{
			Events:   make([]*v2Event, v2EventHistoryLimit),
			Capacity: v2EventHistoryLimit,
		}}},
		Stats:          &v2Stats{},
		CurrentVersion: v2StoreVersion,
	}
	for _, ns := range namespaces {
		s.Root.Children[strings.TrimPrefix(ns, "/")] = newV2Dir(ns, 0)
	}
	return s
}

// create is store.Create/Set of a permanent key that does not exist yet
// (the only writes RaftCluster.Store makes on a fresh store): missing
// parent directories get the new index, the event is recorded, the
// action's success counter is bumped.
func (s *v2Store) create(action, nodePath, value string) error {
	next := s.CurrentIndex + 1
	dirName, name := path.Split(nodePath)
	d := s.Root
	for _, c := range strings.Split(strings.Trim(dirName, "/"), "/") {
		if c == "" {
			continue
		}
		child, ok := d.Children[c]
		if !ok {
			child = newV2Dir(path.Join(d.Path, c), next)
			d.Children[c] = child
		} else if child.Children == nil {
			return fmt.Errorf("snap: v2 store: %s is not a directory", child.Path)
		}
		d = child
	}
	if _, ok := d.Children[name]; ok {
		return fmt.Errorf("snap: v2 store: %s already exists", nodePath)
	}
	d.Children[name] = &v2Node{Path: nodePath, CreatedIndex: next, ModifiedIndex: next, Value: value}
	s.CurrentIndex = next

	v := value
	q := &s.WatcherHub.EventHistory.Queue
	q.Events[q.Back] = &v2Event{Action: action, Node: &v2NodeExtern{Key: nodePath, Value: &v, ModifiedIndex: next, CreatedIndex: next}}
	q.Back = (q.Back + 1) % q.Capacity
	if q.Size == q.Capacity {
		q.Front = (q.Front + 1) % q.Capacity
	} else {
		q.Size++
	}
	eh := s.WatcherHub.EventHistory
	eh.LastIndex = next
	eh.StartIndex = q.Events[q.Front].Node.ModifiedIndex

	switch action {
	case "create":
		s.Stats.CreateSuccess++
	case "set":
		s.Stats.SetSuccess++
	}
	return nil
}

// EncodeV2Membership returns the v2 store JSON that etcd 3.6 and 3.7 put in
// a .snap file (GetMembershipInfoInV2Format) for this membership: members
// in the given order (raftAttributes created, then attributes set when
// ClientURLs != nil), then removed members, then the version if not "".
// Given the same order, the bytes equal etcd's.
func EncodeV2Membership(m *Membership) ([]byte, error) {
	s := newV2Store(storeClusterPrefix, storeKeysPrefix)
	// RaftCluster.Store first checks that the store has no members: one
	// failing Get of /0/members.
	s.Stats.GetFail++
	seen := make(map[uint64]bool, len(m.Members))
	for _, mb := range m.Members {
		if seen[mb.ID] {
			return nil, fmt.Errorf("snap: v2 store: duplicate member %x", mb.ID)
		}
		seen[mb.ID] = true
		key := path.Join(membersPrefix, strconv.FormatUint(mb.ID, 16))
		ra, err := json.Marshal(v2RaftAttributes{PeerURLs: mb.PeerURLs, IsLearner: mb.IsLearner})
		if err != nil {
			return nil, fmt.Errorf("snap: v2 store: %w", err)
		}
		if err := s.create("create", path.Join(key, raftAttrsName), string(ra)); err != nil {
			return nil, err
		}
		if mb.ClientURLs != nil {
			a, err := json.Marshal(v2Attributes{Name: mb.Name, ClientURLs: mb.ClientURLs})
			if err != nil {
				return nil, fmt.Errorf("snap: v2 store: %w", err)
			}
			if err := s.create("set", path.Join(key, attrsName), string(a)); err != nil {
				return nil, err
			}
		}
	}
	for _, id := range m.Removed {
		if err := s.create("create", path.Join(removedPrefix, strconv.FormatUint(id, 16)), ""); err != nil {
			return nil, err
		}
	}
	if m.Version != "" {
		if err := s.create("set", versionKey, m.Version); err != nil {
			return nil, err
		}
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("snap: v2 store: %w", err)
	}
	return b, nil
}

// DecodeV2Store parses a v2 store JSON written by etcd 3.5, 3.6 or 3.7 and
// returns its membership and a summary of what else it holds. Malformed
// JSON or membership entries etcd itself would refuse (unknown keys under a
// member, a member without raftAttributes, a bad id) are errors.
func DecodeV2Store(data []byte) (*V2Store, error) {
	if len(data) > MaxV2StoreSize {
		return nil, fmt.Errorf("snap: v2 store: %d bytes exceeds the limit of %d", len(data), MaxV2StoreSize)
	}
	var s struct {
		Root         *v2Node
		CurrentIndex uint64
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("snap: v2 store: %w", err)
	}
	if s.Root == nil {
		return nil, errors.New("snap: v2 store: no Root")
	}
	out := &V2Store{CurrentIndex: s.CurrentIndex}
	for _, name := range sortedKeys(s.Root.Children) {
		n := s.Root.Children[name]
		switch "/" + name {
		case storeClusterPrefix:
			if err := decodeMembership(n, &out.Membership); err != nil {
				return nil, err
			}
		case storeKeysPrefix:
			out.KeyNodes = countLeaves(n)
		case storeAuthPrefix:
			out.AuthNodes = countLeaves(n)
		default:
			out.Other = append(out.Other, "/"+name)
		}
	}
	return out, nil
}

func sortedKeys(m map[string]*v2Node) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// countLeaves counts the key (non-directory) nodes under n. encoding/json
// bounds the nesting depth, so the recursion is bounded too.
func countLeaves(n *v2Node) int {
	if n == nil {
		return 0
	}
	if n.Children == nil {
		return 1
	}
	c := 0
	for _, ch := range n.Children {
		c += countLeaves(ch)
	}
	return c
}

func parseMemberID(name string) (uint64, error) {
	id, err := strconv.ParseUint(name, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("snap: v2 store: bad member id %q", name)
	}
	return id, nil
}

func decodeMembership(n *v2Node, m *Membership) error {
	if n == nil {
		return nil
	}
	type withIndex struct {
		idx uint64
		m   Member
	}
	var members []withIndex
	seen := map[uint64]bool{}
	if d := n.Children["members"]; d != nil {
		for _, name := range sortedKeys(d.Children) {
			md := d.Children[name]
			id, err := parseMemberID(name)
			if err != nil {
				return err
			}
			if seen[id] {
				return fmt.Errorf("snap: v2 store: member %x appears twice", id)
			}
			seen[id] = true
			if md == nil || md.Children == nil {
				return fmt.Errorf("snap: v2 store: %s/%s is not a directory", membersPrefix, name)
			}
			mb := Member{ID: id}
			ra := md.Children[raftAttrsName]
			if ra == nil {
				return fmt.Errorf("snap: v2 store: member %s has no raftAttributes", name)
			}
			for k := range md.Children {
				if k != raftAttrsName && k != attrsName {
					return fmt.Errorf("snap: v2 store: member %s: unknown key %q", name, k)
				}
			}
			var r v2RaftAttributes
			if err := json.Unmarshal([]byte(ra.Value), &r); err != nil {
				return fmt.Errorf("snap: v2 store: member %s raftAttributes: %w", name, err)
			}
			mb.PeerURLs, mb.IsLearner = r.PeerURLs, r.IsLearner
			if a := md.Children[attrsName]; a != nil {
				var at v2Attributes
				if err := json.Unmarshal([]byte(a.Value), &at); err != nil {
					return fmt.Errorf("snap: v2 store: member %s attributes: %w", name, err)
				}
				mb.Name, mb.ClientURLs = at.Name, at.ClientURLs
				if mb.ClientURLs == nil {
					mb.ClientURLs = []string{}
				}
			}
			members = append(members, withIndex{ra.CreatedIndex, mb})
		}
	}
	sort.SliceStable(members, func(i, j int) bool { return members[i].idx < members[j].idx })
	for _, w := range members {
		m.Members = append(m.Members, w.m)
	}
	if d := n.Children["removed_members"]; d != nil {
		type rm struct{ idx, id uint64 }
		var rs []rm
		seen := map[uint64]bool{}
		for _, name := range sortedKeys(d.Children) {
			id, err := parseMemberID(name)
			if err != nil {
				return err
			}
			if seen[id] { // etcd keeps removed IDs in a set
				continue
			}
			seen[id] = true
			var idx uint64
			if c := d.Children[name]; c != nil {
				idx = c.CreatedIndex
			}
			rs = append(rs, rm{idx, id})
		}
		sort.SliceStable(rs, func(i, j int) bool { return rs[i].idx < rs[j].idx })
		for _, r := range rs {
			m.Removed = append(m.Removed, r.id)
		}
	}
	if v := n.Children["version"]; v != nil && v.Children == nil {
		m.Version = v.Value
	}
	return nil
}
