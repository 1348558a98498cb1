package mvcc

// Additive hooks for the engine (engine/): applying a raft entry must write the
// request's changes and meta/consistent_index + meta/term in one bbolt
// transaction, as etcd's backend pre-commit hook does. Nothing here changes
// the behaviour of the other files.

// HoldCommits runs fn while no backend commit can start, so that every write
// fn makes through Backend.Write (Store.Put, DeleteRange, Txn, the lessor,
// SetConsistentIndex, ...) lands in the same pending batch and therefore in the
// same bbolt transaction. fn must not force a commit (Store.Compact, HashKV,
// ForceCommit would deadlock); readers are not blocked.
func (b *Backend) HoldCommits(fn func() error) error {
	b.commitMu.Lock()
	defer b.commitMu.Unlock()
	return fn()
}

// EnsureBucket creates bucket name at the next commit if it is missing.
func (w *WriteTx) EnsureBucket(name []byte) { w.ensureBucket(name) }
