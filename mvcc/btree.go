package mvcc

import "sort"

// indexTree is an in-memory B-tree of keyIndex values ordered by key. Items
// are stored by value in the nodes (no per-key allocation besides the key and
// the revision slice). Keys are never removed one by one: a key whose history
// compaction empties stays as an empty item until the next rebuild, which
// repacks the tree from the live items in one pass.
//
// Pointers returned by get are valid until the next insert or rebuild.
type indexTree struct {
	root  *btNode
	count int // items, empty ones included
	dead  int // empty items
}

const (
	btMaxItems = 63 // 2*degree-1 with degree 32, as etcd's tree
	btMinSplit = btMaxItems / 2
)

type btNode struct {
	items    []keyIndex
	children []*btNode // nil for a leaf
}

// find returns the position of key in n.items and whether it is there.
func (n *btNode) find(key string) (int, bool) {
	i := sort.Search(len(n.items), func(i int) bool { return n.items[i].key >= key })
	return i, i < len(n.items) && n.items[i].key == key
}

func (t *indexTree) get(key string) *keyIndex {
	n := t.root
	for n != nil {
		i, ok := n.find(key)
		if ok {
			return &n.items[i]
		}
		if n.children == nil {
			return nil
		}
		n = n.children[i]
	}
	return nil
}

// insert adds ki, whose key must not be in the tree, and returns a pointer
// to the stored item.
func (t *indexTree) insert(ki keyIndex) *keyIndex {
	t.count++
	if t.root == nil {
		t.root = &btNode{items: make([]keyIndex, 0, 4)}
	}
	if len(t.root.items) >= btMaxItems {
		old := t.root
		t.root = &btNode{children: []*btNode{old}}
		t.root.splitChild(0)
	}
	n := t.root
	for {
		i, _ := n.find(ki.key)
		if n.children == nil {
			n.items = append(n.items, keyIndex{})
			copy(n.items[i+1:], n.items[i:])
			n.items[i] = ki
			return &n.items[i]
		}
		if len(n.children[i].items) >= btMaxItems {
			n.splitChild(i)
			if ki.key > n.items[i].key {
				i++
			}
		}
		n = n.children[i]
	}
}

// splitChild splits the full child i of n around its middle item.
func (n *btNode) splitChild(i int) {
	c := n.children[i]
	mid := btMinSplit
	right := &btNode{items: make([]keyIndex, len(c.items)-mid-1, btMaxItems)}
	copy(right.items, c.items[mid+1:])
	if c.children != nil {
		right.children = make([]*btNode, len(c.children)-mid-1, btMaxItems+1)
		copy(right.children, c.children[mid+1:])
		clear(c.children[mid+1:])
		c.children = c.children[:mid+1]
	}
	up := c.items[mid]
	clear(c.items[mid:])
	c.items = c.items[:mid]
	n.items = append(n.items, keyIndex{})
	copy(n.items[i+1:], n.items[i:])
	n.items[i] = up
	n.children = append(n.children, nil)
	copy(n.children[i+2:], n.children[i+1:])
	n.children[i+1] = right
}

// ascend calls fn for every item with key >= from, in order, while fn
// returns true. Empty items are skipped.
func (t *indexTree) ascend(from string, fn func(ki *keyIndex) bool) {
	if t.root != nil {
		t.root.ascend(from, fn)
	}
}

func (n *btNode) ascend(from string, fn func(ki *keyIndex) bool) bool {
	i := 0
	if from != "" {
		i, _ = n.find(from)
	}
	for ; i < len(n.items); i++ {
		if n.children != nil && !n.children[i].ascend(from, fn) {
			return false
		}
		from = "" // everything right of the first position is >= from
		if ki := &n.items[i]; len(ki.h) > 0 && !fn(ki) {
			return false
		}
	}
	if n.children != nil {
		return n.children[len(n.items)].ascend(from, fn)
	}
	return true
}

// rebuild repacks the tree with only the non-empty items, filling nodes to
// about 3/4 so that later inserts do not split at once.
func (t *indexTree) rebuild() {
	b := newTreeBuilder()
	t.ascend("", func(ki *keyIndex) bool {
		b.add(*ki)
		return true
	})
	*t = b.finish()
}

// treeBuilder builds a tree from items added in ascending key order.
type treeBuilder struct {
	levels []*btNode // rightmost open node per level, leaves first
	count  int
	fill   int
}

func newTreeBuilder() *treeBuilder { return &treeBuilder{fill: btMaxItems * 3 / 4} }

func (b *treeBuilder) add(ki keyIndex) {
	b.count++
	b.addAt(0, ki, nil)
}

// addAt appends ki to the open node of level l; right is the child that
// follows ki on an internal level.
func (b *treeBuilder) addAt(l int, ki keyIndex, right *btNode) {
	if l == len(b.levels) {
		n := &btNode{items: make([]keyIndex, 0, btMaxItems)}
		if l > 0 {
			n.children = make([]*btNode, 0, btMaxItems+1)
			// the first child is the node that was closed below
		}
		b.levels = append(b.levels, n)
	}
	n := b.levels[l]
	if l == 0 && len(n.items) >= b.fill || l > 0 && len(n.items) >= b.fill {
		// close n: ki goes up as separator, a new open node starts
		nn := &btNode{items: make([]keyIndex, 0, btMaxItems)}
		if l > 0 {
			nn.children = make([]*btNode, 0, btMaxItems+1)
			nn.children = append(nn.children, right)
		}
		b.levels[l] = nn
		b.pushUp(l, n, ki, nn)
		return
	}
	n.items = append(n.items, ki)
	if l > 0 {
		n.children = append(n.children, right)
	}
}

// pushUp records that node left (now closed) at level l is followed by
// separator ki and then the open node right.
func (b *treeBuilder) pushUp(l int, left *btNode, ki keyIndex, right *btNode) {
	if l+1 == len(b.levels) {
		p := &btNode{items: make([]keyIndex, 0, btMaxItems), children: make([]*btNode, 0, btMaxItems+1)}
		p.children = append(p.children, left)
		b.levels = append(b.levels, p)
	}
	b.addAt(l+1, ki, right)
}

func (b *treeBuilder) finish() indexTree {
	if len(b.levels) == 0 || b.count == 0 {
		return indexTree{}
	}
	root := b.levels[len(b.levels)-1]
	// An internal root with no items has exactly one child: descend.
	for root.children != nil && len(root.items) == 0 {
		root = root.children[0]
	}
	return indexTree{root: root, count: b.count}
}
