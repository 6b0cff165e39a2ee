package blockcore

import (
	"slices"

	"blockd/schema"
)

// reopenEntry is one node's pending reopen (QEMU's BDRVReopenState).
type reopenEntry struct {
	n        *Node
	options  *flatOpts // every option the node is reopened with
	explicit *flatOpts // the options given for it, which it keeps
	child    bool      // queued as an inheriting child of another entry
	// backingMissing: a blockdev-reopen that did not say "backing".
	backingMissing bool
	state          ReopenState

	// Set by prepare.
	detectZeroes   string
	typed          *schema.BlockdevOptions
	typedFrom      *flatOpts // what typed was decoded from
	commit         func()
	oldBacking     *Node // the backing child replaced, if any
	oldFile        *Node // the file child replaced, if any
	backingChanged bool
	fileChanged    bool
}

// reopenQueue is the set of nodes one reopen changes, in the order QEMU
// queues them: each listed node followed by the children that inherit
// options from it. A nil queue means "as the nodes are".
type reopenQueue struct {
	entries []*reopenEntry
	byNode  map[*Node]*reopenEntry
}

func newReopenQueue() *reopenQueue { return &reopenQueue{byNode: map[*Node]*reopenEntry{}} }

func (q *reopenQueue) entry(n *Node) *reopenEntry {
	if q == nil {
		return nil
	}
	return q.byNode[n]
}

func (q *reopenQueue) has(n *Node) bool { return q.entry(n) != nil }

// writable is bdrv_is_writable_after_reopen.
func (q *reopenQueue) writable(n *Node) bool {
	if e := q.entry(n); e != nil {
		return !e.state.ReadOnly
	}
	return n.writableNow()
}

func (q *reopenQueue) view(n *Node) NodeState { return NodeState{Writable: q.writable(n)} }

// state is what a queued node is reopened with.
func (q *reopenQueue) state(n *Node) *ReopenState { return &q.entry(n).state }

// add is bdrv_reopen_queue_child: queue n with opts (or merge them into
// its entry), then the children that inherit from it. parent is the entry
// n inherits from in role, nil for a listed node. keepOld keeps the
// options that opts does not give (bdrv_reopen); without it, they return
// to their defaults (blockdev-reopen).
func (q *reopenQueue) add(n *Node, opts *flatOpts, parent *reopenEntry, role Role, keepOld bool) {
	e := q.byNode[n]
	// Precedence: given options, then the node's explicit ones (when kept
	// or when the node is queued again), then the parent's, then the rest
	// of the node's current options.
	if e != nil {
		joinOptions(n, opts, e.explicit.clone())
	} else if keepOld {
		joinOptions(n, opts, n.explicitOptions())
	}
	explicit := opts.clone()
	if parent != nil {
		inheritOptions(role, opts, parent.options)
	}
	if keepOld {
		joinOptions(n, opts, n.effectiveOptions())
	}
	if e == nil {
		e = &reopenEntry{n: n}
		q.entries = append(q.entries, e)
		q.byNode[n] = e
	}
	e.options, e.explicit, e.child = opts, explicit, parent != nil
	e.state = ReopenState{
		ReadOnly:     opts.boolOpt("read-only", false),
		AutoReadOnly: opts.boolOpt("auto-read-only", false),
		CacheDirect:  opts.boolOpt("cache.direct", false),
		CacheNoFlush: opts.boolOpt("cache.no-flush", false),
	}
	if !keepOld {
		e.backingMissing = !opts.has("backing") && !opts.has("backing.driver")
	}
	// QEMU lists children newest first.
	kids := slices.Clone(n.children)
	slices.Reverse(kids)
	for _, c := range kids {
		if c.Node.reopen.inheritsFrom != n {
			continue // added by name: reopened only when listed
		}
		childKeep := keepOld
		var childOpts *flatOpts
		if v, ok := opts.get(c.Name); ok {
			// A reference to the current child reopens it with its own
			// options; null or another node leaves it alone.
			if s, isStr := v.(string); !isStr || s != c.Node.name {
				continue
			}
			childKeep = true
			childOpts = newFlat()
		} else {
			explicit.extract(c.Name + ".")
			childOpts = opts.extract(c.Name + ".")
		}
		q.add(c.Node, childOpts, e, c.Role, childKeep)
	}
}

// quiesceSet is what stays drained for the whole reopen: the queued nodes
// that no other queued node is above, and the nodes outside the reopened
// subtrees that use a node inside them. Nodes below a queued node are not
// drained before the commit, so that the owner can still flush a format
// node into its file while preparing (no I/O reaches them but the
// owner's: their other users are drained).
func (q *reopenQueue) quiesceSet() []*Node {
	below := map[*Node]bool{}
	var mark func(n *Node)
	mark = func(n *Node) {
		for _, c := range n.children {
			if !below[c.Node] {
				below[c.Node] = true
				mark(c.Node)
			}
		}
	}
	for _, e := range q.entries {
		mark(e.n)
	}
	set := map[*Node]bool{}
	for _, e := range q.entries {
		if !below[e.n] {
			set[e.n] = true
		}
	}
	for x := range below {
		for _, p := range x.parents {
			if pn, ok := p.Parent.(*Node); ok && !below[pn] && !q.has(pn) {
				set[pn] = true
			}
		}
	}
	return drainOrder(set)
}

// queued lists the queued nodes, parents first: drained for the commit.
func (q *reopenQueue) queued() []*Node {
	set := map[*Node]bool{}
	for _, e := range q.entries {
		set[e.n] = true
	}
	return drainOrder(set)
}

// drainOrder lists a set of nodes parents first.
func drainOrder(set map[*Node]bool) []*Node {
	var roots []*Node
	for n := range set {
		roots = append(roots, n)
	}
	// Map order is random; the topological order only needs the roots'
	// relation, but sort for reproducible drains.
	slices.SortFunc(roots, func(a, b *Node) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	})
	var out []*Node
	for _, n := range topoOrder(roots) {
		if set[n] {
			out = append(out, n)
		}
	}
	return out
}
