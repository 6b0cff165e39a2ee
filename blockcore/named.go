package blockcore

import "iter"

// namedList keeps nodes in the order they got their names, with O(1)
// removal: a removed node leaves a hole, and the slice is compacted once
// holes make up half of it. Queries list the nodes newest first, as
// qemu-storage-daemon does, so the order must survive removals.
type namedList struct {
	nodes []*Node // nil: a hole
	holes int
}

func (l *namedList) add(n *Node) {
	n.namedIdx = len(l.nodes)
	l.nodes = append(l.nodes, n)
}

func (l *namedList) remove(n *Node) {
	i := n.namedIdx
	if i < 0 || i >= len(l.nodes) || l.nodes[i] != n {
		return
	}
	l.nodes[i], n.namedIdx = nil, -1
	l.holes++
	if l.holes*2 > len(l.nodes) {
		kept := l.nodes[:0]
		for _, m := range l.nodes {
			if m != nil {
				m.namedIdx = len(kept)
				kept = append(kept, m)
			}
		}
		clear(l.nodes[len(kept):])
		l.nodes, l.holes = kept, 0
	}
}

// all yields the nodes, oldest first.
func (l *namedList) all() iter.Seq[*Node] {
	return func(yield func(*Node) bool) {
		for _, n := range l.nodes {
			if n != nil && !yield(n) {
				return
			}
		}
	}
}

// slice returns the nodes, oldest first, in a new slice.
func (l *namedList) slice() []*Node {
	out := make([]*Node, 0, len(l.nodes)-l.holes)
	for n := range l.all() {
		out = append(out, n)
	}
	return out
}
