//go:build race

package interop

// raceEnabled: the race detector slows etckit and etcd unevenly, which
// timing comparisons cannot absorb.
const raceEnabled = true
