package server

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// The server feature gates of etcd 3.7.3 (server/features/etcd_features.go),
// with the two generic ones of its featuregate package (AllAlpha, AllBeta).
// etckit acts on LeaseCheckpoint, LeaseCheckpointPersist,
// SetMemberLocalAddr, StopGRPCServiceOnDefrag, InitialCorruptCheck and
// CompactHashCheck; the others are accepted, as etcd accepts them, and
// have no effect.
const (
	featureLeaseCheckpoint        = "LeaseCheckpoint"
	featureLeaseCheckpointPersist = "LeaseCheckpointPersist"
	featureAllAlpha               = "AllAlpha"
	featureAllBeta                = "AllBeta"
)

type featureSpec struct {
	def        bool
	preRelease string // "ALPHA", "BETA"
}

var knownFeatures = map[string]featureSpec{
	featureAllAlpha:                {false, "ALPHA"},
	featureAllBeta:                 {false, "BETA"},
	"StopGRPCServiceOnDefrag":      {false, "ALPHA"},
	"InitialCorruptCheck":          {false, "ALPHA"},
	"CompactHashCheck":             {false, "ALPHA"},
	"TxnModeWriteWithSharedBuffer": {true, "BETA"},
	featureLeaseCheckpoint:         {false, "ALPHA"},
	featureLeaseCheckpointPersist:  {false, "ALPHA"},
	"SetMemberLocalAddr":           {false, "ALPHA"},
	"FastLeaseKeepAlive":           {true, "BETA"},
	"PriorityRequest":              {false, "ALPHA"},
}

// experimentalFeatureFlags are etcd 3.6's boolean flags that set a gate
// (features.ExperimentalFlagToFeatureMap).
var experimentalFeatureFlags = map[string]string{
	"experimental-enable-lease-checkpoint":           featureLeaseCheckpoint,
	"experimental-enable-lease-checkpoint-persist":   featureLeaseCheckpointPersist,
	"experimental-stop-grpc-service-on-defrag":       "StopGRPCServiceOnDefrag",
	"experimental-initial-corrupt-check":             "InitialCorruptCheck",
	"experimental-compact-hash-check-enabled":        "CompactHashCheck",
	"experimental-txn-mode-write-with-shared-buffer": "TxnModeWriteWithSharedBuffer",
}

// featureGates is etcd's --feature-gates value (pkg/featuregate, a copy of
// Kubernetes' component-base): comma-separated Key=bool pairs, each
// occurrence of the flag adding to the last, with etcd's error texts.
type featureGates struct {
	enabled map[string]bool
}

// Set parses "key1=value1,key2=value2,...", as featureGate.Set.
func (g *featureGates) Set(value string) error {
	m := make(map[string]bool)
	for _, s := range strings.Split(value, ",") {
		if len(s) == 0 {
			continue
		}
		arr := strings.SplitN(s, "=", 2)
		k := strings.TrimSpace(arr[0])
		if len(arr) != 2 {
			return fmt.Errorf("missing bool value for %s", k)
		}
		v := strings.TrimSpace(arr[1])
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("invalid value of %s=%s, err: %w", k, v, err)
		}
		m[k] = b
	}
	return g.setFromMap(m)
}

// setFromMap is featureGate.SetFromMap: all or nothing; AllAlpha and
// AllBeta set every gate of their stage not set explicitly. (etcd walks
// the map in Go's random order, so with several bad keys it names any
// one; here the first in key order.)
func (g *featureGates) setFromMap(m map[string]bool) error {
	enabled := maps.Clone(g.enabled)
	if enabled == nil {
		enabled = map[string]bool{}
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if _, ok := knownFeatures[k]; !ok {
			return fmt.Errorf("unrecognized feature gate: %s", k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		enabled[k] = v
		stage := ""
		switch k {
		case featureAllAlpha:
			stage = "ALPHA"
		case featureAllBeta:
			stage = "BETA"
		}
		if stage == "" {
			continue
		}
		for name, spec := range knownFeatures {
			if _, set := enabled[name]; !set && spec.preRelease == stage {
				enabled[name] = v
			}
		}
	}
	g.enabled = enabled
	return nil
}

// Enabled is the gate's value: as set, else its default.
func (g *featureGates) Enabled(name string) bool {
	if v, ok := g.enabled[name]; ok {
		return v
	}
	return knownFeatures[name].def
}

// String is featureGate.String: the gates set, "key=value" sorted.
func (g *featureGates) String() string {
	pairs := []string{}
	for k, v := range g.enabled {
		pairs = append(pairs, fmt.Sprintf("%s=%t", k, v))
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

// Type is featureGate.Type.
func (g *featureGates) Type() string { return "mapStringBool" }

// usage is the flag's help, as featureGate.AddFlag writes it.
func (g *featureGates) usage() string {
	var known []string
	for k, v := range knownFeatures {
		known = append(known, fmt.Sprintf("%s=true|false (%s - default=%t)", k, v.preRelease, v.def))
	}
	sort.Strings(known)
	return "A set of key=value pairs that describe feature gates for alpha/experimental features. Options are:\n" + strings.Join(known, "\n")
}

// setFromExperimentalFlags is etcd 3.6's
// embed.SetFeatureGatesFromExperimentalFlags: an experimental flag given
// explicitly sets its gate, unless --feature-gates names the gate too (a
// substring test on the gates' String, as etcd's), which is an error.
// flagVal returns nil for a flag not given.
func (g *featureGates) setFromExperimentalFlags(flagVal func(name string) *bool) error {
	gates := g.String()
	m := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(experimentalFeatureFlags)) {
		feature := experimentalFeatureFlags[name]
		v := flagVal(name)
		if v == nil {
			continue
		}
		if strings.Contains(gates, feature) {
			return fmt.Errorf("cannot specify both flags: --%s=%v and --%s=%s=%v at the same time, please just use --%s=%s=%v",
				name, *v, "feature-gates", feature, g.Enabled(feature), "feature-gates", feature, g.Enabled(feature))
		}
		m[feature] = *v
	}
	return g.setFromMap(m)
}
