package blockcore

import (
	"blockd/blockio"
)

// ReopenState is what a node is being reopened with (QEMU's
// BDRVReopenState): the generic flags, and the options its driver may
// change, read with Int and Bool under their QAPI names.
type ReopenState struct {
	ReadOnly     bool
	AutoReadOnly bool
	CacheDirect  bool
	CacheNoFlush bool
	DiscardUnmap bool
	opts         *flatOpts
}

// Int returns an integer option and whether it was given.
func (rs *ReopenState) Int(key string) (int64, bool) {
	if rs.opts == nil {
		return 0, false
	}
	return rs.opts.intOpt(key)
}

// String returns a string option and whether it was given.
func (rs *ReopenState) String(key string) (string, bool) {
	if rs.opts == nil || !rs.opts.has(key) {
		return "", false
	}
	return rs.opts.strOpt(key, ""), true
}

// Bool returns a boolean option and whether it was given.
func (rs *ReopenState) Bool(key string) (value, given bool) {
	if rs.opts == nil || !rs.opts.has(key) {
		return false, false
	}
	return rs.opts.boolOpt(key, false), true
}

// Reopener is implemented by drivers that can be reopened without their
// own permission step (format drivers, null-co): prepare validates the new
// options and does what may fail (a format driver flushes when it goes
// read-only); exactly one of commit or abort follows. Commit runs while
// the node is drained and after the storage below has been reopened.
type Reopener interface {
	ReopenPrepare(rs *ReopenState) (commit, abort func(), err error)
}

// ReopenPermHandler is implemented by protocol drivers whose reopen is part
// of their permission step (the file driver opens a new descriptor with
// the new flags and moves its locks there, as QEMU's raw_check_perm does
// with the reopen state): for a node being reopened the graph calls
// CheckPermReopen instead of CheckPerm, then SetPerm or AbortPerm as usual.
type ReopenPermHandler interface {
	PermHandler
	CheckPermReopen(rs *ReopenState, perm, shared blockio.Perm) error
}

// FileUser is implemented by drivers whose file child a reopen may switch
// to another node: SetFile hands over the new child's data path. It is
// called while the node is drained.
type FileUser interface {
	SetFile(dev blockio.Device)
}

// reopenable reports whether a node's driver can be reopened at all.
func reopenable(n *Node) bool {
	switch n.impl.(type) {
	case Reopener, ReopenPermHandler:
		return reopenSpecs[n.drv.Name] != nil
	}
	return false
}
