package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/etckit/etckit/mvcc"
)

// Version is a semantic version as etcd's go-semver reads one
// (MAJOR.MINOR.PATCH, an optional -prerelease and +metadata, which only
// the text keeps).
type Version struct {
	Major, Minor, Patch int64
	Pre                 string
}

// ParseVersion parses "3.6.0" (or "3.6.0-rc.0+meta") as go-semver's
// NewVersion: metadata after the first '+', a prerelease after the first
// '-', then three dot-separated decimal numbers.
func ParseVersion(s string) (Version, error) {
	v, meta, _ := strings.Cut(s, "+")
	v, pre, _ := strings.Cut(v, "-")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) != 3 {
		return Version{}, fmt.Errorf("%s is not in dotted-tri format", v)
	}
	for _, id := range []string{pre, meta} {
		if id != "" && !semverIdent.MatchString(id) {
			return Version{}, fmt.Errorf("%s is not a valid semver identifier", id)
		}
	}
	var n [3]int64
	for i, p := range parts {
		x, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return Version{}, err
		}
		n[i] = x
	}
	return Version{Major: n[0], Minor: n[1], Patch: n[2], Pre: pre}, nil
}

var semverIdent = regexp.MustCompile(`^[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*$`)

// String is the MAJOR.MINOR.PATCH[-pre] text.
func (v Version) String() string {
	s := fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
	if v.Pre != "" {
		s += "-" + v.Pre
	}
	return s
}

// MajorMinor drops the patch and prerelease, as etcd does before comparing
// with a cluster version.
func (v Version) MajorMinor() Version { return Version{Major: v.Major, Minor: v.Minor} }

// Less orders versions; a prerelease is lower than its release, and
// prereleases compare as text (enough for etcd's "-alpha.0" < "-rc.0").
func (v Version) Less(o Version) bool {
	if v.Major != o.Major {
		return v.Major < o.Major
	}
	if v.Minor != o.Minor {
		return v.Minor < o.Minor
	}
	if v.Patch != o.Patch {
		return v.Patch < o.Patch
	}
	switch {
	case v.Pre == o.Pre:
		return false
	case v.Pre == "":
		return false
	case o.Pre == "":
		return true
	}
	return v.Pre < o.Pre
}

// ServerVersion is the server version etckit runs as (the cluster version
// it can serve at most); server.Version is the same text.
var ServerVersion = mustParse(EtcdVersion)

func mustParse(s string) Version {
	v, err := ParseVersion(s)
	if err != nil {
		panic(err) // a constant of this package
	}
	return v
}

// DowngradeInfo is etcd's, stored as JSON under cluster/downgrade.
type DowngradeInfo struct {
	// TargetVersion is the target ("3.6.0"); empty when not downgrading.
	TargetVersion string `json:"target-version"`
	Enabled       bool   `json:"enabled"`
}

// ErrInvalidDowngrade stops a member whose server version is lower than
// the cluster version (etcd's MustDetectDowngrade panics with this text).
var ErrInvalidDowngrade = errors.New("invalid downgrade; server version is lower than determined cluster version")

// DowngradeError is ErrInvalidDowngrade with the two versions etcd logs.
type DowngradeError struct {
	ServerVersion  string // major.minor.0 of this member
	ClusterVersion string // major.minor.0 of the cluster
}

func (e *DowngradeError) Error() string {
	return fmt.Sprintf("%v: current-server-version %s, determined-cluster-version %s", ErrInvalidDowngrade, e.ServerVersion, e.ClusterVersion)
}

func (e *DowngradeError) Unwrap() error { return ErrInvalidDowngrade }

// detectDowngrade is etcd's MustDetectDowngrade: a cluster version above
// this member's major.minor is fatal (unless Options.AnyClusterVersion).
func (e *Engine) detectDowngrade(cv string) error {
	if cv == "" || e.opts.AnyClusterVersion {
		return nil
	}
	v, err := ParseVersion(cv)
	if err != nil {
		return fmt.Errorf("engine: cluster version %q: %w", cv, err)
	}
	sv := ServerVersion.MajorMinor()
	if sv.Less(v) {
		return &DowngradeError{ServerVersion: sv.String(), ClusterVersion: v.MajorMinor().String()}
	}
	return nil
}

// DowngradeInfo is the applied downgrade state (Enabled false when none).
func (e *Engine) DowngradeInfo() DowngradeInfo {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.downgrade
}

// setDowngradeInfo is etcd's DowngradeInfoSet apply: the target is kept
// only when enabling, and the JSON goes to cluster/downgrade.
func (e *Engine) setDowngradeInfo(enabled bool, ver string) error {
	d := DowngradeInfo{}
	if enabled {
		d = DowngradeInfo{Enabled: true, TargetVersion: ver}
	}
	val, err := json.Marshal(d)
	if err != nil {
		return err // two plain fields: cannot happen
	}
	if err := e.store.Backend().Write(func(w *mvcc.WriteTx) error {
		w.Put([]byte(mvcc.BucketCluster), []byte(clusterDowngradeKey), val)
		return nil
	}); err != nil {
		return err
	}
	e.mu.Lock()
	e.downgrade = d
	e.mu.Unlock()
	return nil
}

const clusterDowngradeKey = "downgrade"

// parseDowngradeInfo reads cluster/downgrade as etcd's
// DowngradeInfoFromBackend, which refuses JSON it cannot read and an
// enabled target that is no version.
func parseDowngradeInfo(val []byte) (DowngradeInfo, error) {
	var d DowngradeInfo
	if err := json.Unmarshal(val, &d); err != nil {
		return DowngradeInfo{}, fmt.Errorf("failed to unmarshal downgrade information: %w", err)
	}
	if d.Enabled {
		if _, err := ParseVersion(d.TargetVersion); err != nil {
			return DowngradeInfo{}, fmt.Errorf("unexpected version format of the downgrade target version from backend: %w", err)
		}
	}
	return d, nil
}

// storageVersionFor is what etcd's storage monitor migrates meta's
// storageVersion to for cluster version cv: its major.minor.0 from 3.6 on
// (the cluster version never exceeds this member's own), removed at
// 3.5 (the downgrade step of 3.6's schema change), and left alone below
// 3.5 or before a cluster version (etcd has no plan for those).
func storageVersionFor(cv string) (val string, del, change bool) {
	v, err := ParseVersion(cv)
	if err != nil || v.Major != 3 {
		return "", false, false
	}
	switch {
	case v.Minor >= 6:
		return v.MajorMinor().String(), false, true
	case v.Minor == 5:
		return "", true, true
	}
	return "", false, false
}

// UpdateStorageVersion is etcd's UpdateStorageVersionIfNeeded: it brings
// meta/storageVersion to the cluster version's and reports the old and
// new values when it changed something.
func (e *Engine) UpdateStorageVersion() (from, to string, changed bool, err error) {
	val, del, change := storageVersionFor(e.ClusterVersion())
	if !change {
		return "", "", false, nil
	}
	b := e.Store().Backend()
	v := b.View()
	cur, ok := v.Get([]byte(mvcc.BucketMeta), []byte(mvcc.MetaStorageVersion))
	from = string(cur)
	v.Release()
	if (del && !ok) || (!del && ok && from == val) {
		return from, from, false, nil
	}
	if err := b.Write(func(w *mvcc.WriteTx) error {
		if del {
			w.Delete([]byte(mvcc.BucketMeta), []byte(mvcc.MetaStorageVersion))
		} else {
			w.Put([]byte(mvcc.BucketMeta), []byte(mvcc.MetaStorageVersion), []byte(val))
		}
		return nil
	}); err != nil {
		return from, from, false, err
	}
	return from, val, true, nil
}

// StorageVersion is etcd's DetectSchemaVersion: meta/storageVersion when
// it is a version, else 3.5.0 for a db that has a term, else "" (etcd's
// /version says "unknown").
func (e *Engine) StorageVersion() string {
	st := e.Store()
	v := st.Backend().View()
	sv, ok := v.Get([]byte(mvcc.BucketMeta), []byte(mvcc.MetaStorageVersion))
	v.Release()
	if ok {
		if p, err := ParseVersion(string(sv)); err == nil {
			return p.String()
		}
	}
	if _, term, err := st.ConsistentIndex(); err == nil && term != 0 {
		return "3.5.0"
	}
	return ""
}
