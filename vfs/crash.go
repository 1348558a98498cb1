package vfs

import (
	"bytes"
	"maps"
	"math/rand/v2"
	"slices"
)

// CrashOptions control what a crash keeps of the changes that were not synced.
type CrashOptions struct {
	// Seed drives the choice of surviving sectors; the same seed on the same
	// state gives the same result.
	Seed int64
	// KeepProb is the probability that each unsynced sector survives:
	// 0 keeps none, 1 keeps all. (The zero value keeps none.)
	KeepProb float64
}

// Crash is CrashWith(CrashOptions{Seed: seed, KeepProb: 0.5}).
func (m *MemFS) Crash(seed int64) *MemFS {
	return m.CrashWith(CrashOptions{Seed: seed, KeepProb: 0.5})
}

// CrashWith returns a new filesystem holding what a disk could hold after
// power loss at this instant. m itself is unchanged and stays usable.
//
// The model is deliberately strict, since POSIX promises nothing without
// fsync:
//
//   - Directory entries: each directory's durable entries are its entries as
//     of its last SyncDir (or Sync of a handle on it); a directory never
//     synced has none. The crashed tree is rebuilt from "/", which always
//     exists, following durable entries only. So a file created, renamed or
//     removed in a directory that was not synced afterwards is missing, keeps
//     its old name, or is back; a directory made by MkdirAll survives only
//     if its parent was synced, and so on up to "/".
//   - File data: each file gets its content as of its last Sync/Datasync
//     (empty if never synced). Then, walking the tree depth-first in sorted
//     name order and each file in ascending offset, each 512-byte sector (aligned to the file offset) whose current
//     bytes differ from the durable ones or lie past the durable length
//     survives with probability KeepProb. The length is the durable length,
//     or the end of the last surviving sector (capped at the current length)
//     if greater; gaps read as the durable bytes or zeros. A sector is
//     compared and kept whole, zero-padded: where an unsynced truncate left
//     the current end inside a surviving sector, the rest of the sector
//     (up to the durable length) reads as zeros. Truncate and
//     Preallocate are unsynced changes like writes: a crash never shrinks a
//     file below its durable length.
//   - Oddities of the strict model: a file durably entered in two
//     directories (renamed across directories, both synced) gets two names
//     for one inode, like a hard link; a directory durably entered in two
//     places keeps only the first in sorted depth-first order.
//
// The result is crashable, with everything in it durable, and holds no
// locks. On a MemFS from NewMem, where everything is always durable,
// CrashWith returns an exact copy.
func (m *MemFS) CrashWith(o CrashOptions) *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := crasher{
		crashable: m.crashable,
		keep:      o.KeepProb,
		rng:       rand.New(rand.NewPCG(uint64(o.Seed), 0x5EC7)),
		files:     map[*node]*node{},
		dirs:      map[*node]bool{},
	}
	out := newMem(m.crashable)
	out.root = c.dir(m.root)
	return out
}

type crasher struct {
	crashable bool
	keep      float64
	rng       *rand.Rand
	files     map[*node]*node // old inode -> crashed copy
	dirs      map[*node]bool  // directories already placed
}

func (c *crasher) dir(d *node) *node {
	c.dirs[d] = true
	entries := d.children
	if c.crashable {
		entries = d.durableChildren
	}
	nd := newDir(d.mode.Perm())
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		switch child := entries[name]; {
		case !child.isDir():
			nd.children[name] = c.file(child)
		case !c.dirs[child]:
			nd.children[name] = c.dir(child)
		}
	}
	if c.crashable {
		nd.durableChildren = maps.Clone(nd.children)
	}
	return nd
}

func (c *crasher) file(n *node) *node {
	if f, ok := c.files[n]; ok {
		return f
	}
	data := bytes.Clone(n.data)
	if c.crashable {
		data = bytes.Clone(n.durable)
		var cur, old [SectorSize]byte
		for off := 0; off < len(n.data); off += SectorSize {
			sector(&cur, n.data, off)
			sector(&old, n.durable, off)
			end := min(off+SectorSize, len(n.data))
			if end <= len(n.durable) && cur == old {
				continue
			}
			if c.rng.Float64() >= c.keep {
				continue
			}
			if len(data) < end {
				data = resize(data, int64(end))
			}
			copy(data[off:], cur[:])
		}
	}
	f := &node{mode: n.mode, data: data}
	if c.crashable {
		f.durable = bytes.Clone(data)
	}
	c.files[n] = f
	return f
}

// sector copies the sector of b at off into dst, zero past the end of b.
func sector(dst *[SectorSize]byte, b []byte, off int) {
	n := 0
	if off < len(b) {
		n = copy(dst[:], b[off:])
	}
	clear(dst[n:])
}
