package blockcore

// SetImpl replaces a node's driver state (a driver's reopen commit).
// Only valid while the node is drained, i.e. inside a reopen commit.
func (n *Node) SetImpl(impl Impl) { n.impl = impl }
