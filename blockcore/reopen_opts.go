package blockcore

import (
	"blockd/schema"
)

// What QEMU 7.2 does with each option during a reopen. The generic block
// layer takes its runtime options (bdrv_runtime_opts) and gives node-name,
// driver and force-share back as strings; then the driver's
// .bdrv_reopen_prepare takes the options it can change and may give
// others back as strings; whatever is left must equal the node's current
// value ("Cannot change the option '%s'"). An option the node was opened
// with may only be left out (reset to its default) when it is generic or
// in the driver's mutable_opts.

// reopenSpec is one driver's part of that.
type reopenSpec struct {
	consumed  []string // taken by the driver's prepare: these may change
	stringify []string // given back as strings, so compared as strings
	mutable   []string // may be reset by leaving them out
	// join merges old options into new ones for a reopen that keeps
	// them (bdrv_join_options); nil is a plain join.
	join func(opts, old *flatOpts)
}

var qcow2RuntimeOpts = []string{
	"lazy-refcounts", "pass-discard-request", "pass-discard-snapshot", "pass-discard-other",
	"overlap-check", "cache-size", "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size",
	"cache-clean-interval",
}

var reopenSpecs = map[string]*reopenSpec{
	// file-posix: raw_reopen_prepare absorbs raw_runtime_opts, keeps
	// drop-cache and x-check-cache-dropped and puts the rest back for the
	// generic check.
	"file": {
		consumed:  []string{"drop-cache", "x-check-cache-dropped"},
		stringify: []string{"filename", "aio", "aio-max-batch", "locking", "pr-manager"},
		mutable:   []string{"x-check-cache-dropped"},
	},
	"raw":   {consumed: []string{"offset", "size"}, mutable: []string{"offset", "size"}},
	"qcow2": {consumed: qcow2RuntimeOpts, mutable: qcow2RuntimeOpts, join: qcow2JoinOptions},
	// null-co's prepare accepts everything and changes nothing: its
	// options stay and must be unchanged; so does blkdebug's.
	"null-co":  {},
	"blkdebug": {},
	// throttle_reopen_prepare moves the node to another group.
	"throttle": {consumed: []string{"throttle-group"}},
	// preallocate_reopen_prepare takes new sizes (not resettable).
	"preallocate": {consumed: []string{"prealloc-align", "prealloc-size"}},
	// nbd and luks (block-crypto) consume nothing: their options stay
	// and must be unchanged.
	"nbd":  {},
	"luks": {},
	// rbd's prepare only refuses read-write on a snapshot; every option
	// stays and must be unchanged.
	"rbd": {},
}

// Generic options that may always be left out (bdrv_reset_options_allowed).
var resetIgnore = []string{"node-name", "discard", "cache.direct", "cache.no-flush",
	"read-only", "auto-read-only", "detect-zeroes"}

// qcow2JoinOptions is qcow2_join_options: a new total cache size replaces
// the old split, and a split that is complete drops the old total.
func qcow2JoinOptions(opts, old *flatOpts) {
	newTotal := opts.has("cache-size")
	if newTotal {
		old = old.clone()
		old.del("l2-cache-size")
		old.del("refcount-cache-size")
	}
	opts.join(old)
	if !newTotal && opts.has("l2-cache-size") && opts.has("refcount-cache-size") && opts.has("cache-size") {
		opts.del("cache-size")
	}
}

func joinOptions(n *Node, opts, old *flatOpts) {
	if s := reopenSpecs[n.drv.Name]; s != nil && s.join != nil {
		s.join(opts, old)
		return
	}
	opts.join(old)
}

// reopenInfo is a node's reopen bookkeeping.
type reopenInfo struct {
	// inheritsFrom is the parent the node was opened for (an inline or
	// header-named child), from which it inherits options on reopen
	// (QEMU's inherits_from); nil for nodes added by name.
	inheritsFrom *Node
	// The effective auto-read-only and discard=unmap flags.
	autoReadOnly bool
	discardUnmap bool
	// explicit is what the last reopen gave explicitly (nil before the
	// first: the options the node was opened with).
	explicit *flatOpts
	// What is derived from the node's options, valid while they are
	// cacheFor: flattening and decoding go through JSON, and a reopen of
	// a chain's top asks for every node below, again and again. own is
	// the options flattened without children (ownOptions); typedFrom is
	// the flat input typedOptions decoded into them.
	cacheFor       *schema.BlockdevOptions
	own, typedFrom *flatOpts
}

// cacheOf returns the node's option cache, emptied if the options
// changed since it was filled.
func (n *Node) cacheOf() *reopenInfo {
	r := &n.reopen
	if r.cacheFor != n.options {
		r.cacheFor, r.own, r.typedFrom = n.options, nil, nil
	}
	return r
}

// childKeys are the option names of children, which the node's own
// options never keep (QEMU removes them after opening the children).
var childKeys = []string{"file", "backing", "data-file"}

func withoutChildren(f *flatOpts) *flatOpts {
	for _, c := range childKeys {
		f.dropChild(c)
	}
	return f
}

// ownOptions is a copy of the node's options flattened, without its
// children.
func (n *Node) ownOptions() *flatOpts {
	r := n.cacheOf()
	if r.own == nil {
		r.own = withoutChildren(flattenOptions(n.options))
	}
	return r.own.clone()
}

// explicitOptions is bs->explicit_options.
func (n *Node) explicitOptions() *flatOpts {
	if n.reopen.explicit != nil {
		return n.reopen.explicit.clone()
	}
	return n.ownOptions()
}

// effectiveOptions is bs->options: the options with what the node
// inherited and its current flags.
func (n *Node) effectiveOptions() *flatOpts {
	f := n.ownOptions()
	f.set("read-only", n.readOnly)
	f.set("auto-read-only", n.reopen.autoReadOnly)
	direct, noFlush := n.cacheFlags()
	f.set("cache.direct", direct)
	f.set("cache.no-flush", noFlush)
	if n.reopen.discardUnmap {
		f.set("discard", "unmap")
	} else {
		f.set("discard", "ignore")
	}
	return f
}

func (n *Node) cacheFlags() (direct, noFlush bool) {
	if n.options != nil && n.options.Cache != nil {
		return boolOr(n.options.Cache.Direct, false), boolOr(n.options.Cache.NoFlush, false)
	}
	return false, false
}

// inheritOptions is bdrv_inherited_options for a child in role: cache
// modes, force-share and read-only come from the parent unless set; a
// backing file is read-only unless told otherwise; discard defaults to
// unmap below a node.
func inheritOptions(role Role, child, parent *flatOpts) {
	child.copyDefault(parent, "cache.direct")
	child.copyDefault(parent, "cache.no-flush")
	child.copyDefault(parent, "force-share")
	if role&RoleCOW != 0 {
		child.setDefault("read-only", true)
		child.setDefault("auto-read-only", false)
	} else {
		child.copyDefault(parent, "read-only")
		child.copyDefault(parent, "auto-read-only")
	}
	child.setDefault("discard", "unmap")
}

// typedOptions decodes what a node keeps after a reopen: its options
// with its children named by reference.
func typedOptions(n *Node, opts *flatOpts, file, backing *Node, hasBackingKey bool) (typed *schema.BlockdevOptions, from *flatOpts, err error) {
	f := withoutChildren(opts.clone())
	if file != nil {
		f.set(n.drv.fileChildName(), file.name)
	}
	switch {
	case backing != nil:
		f.set("backing", backing.name)
	case hasBackingKey:
		f.set("backing", nil)
	}
	if r := n.cacheOf(); r.typedFrom != nil && r.typedFrom.equal(f) {
		return n.options, f, nil
	}
	// Only options blockdev-add knows survive (QEMU keeps the rest in its
	// QDict, blockd has no use for them).
	var o schema.BlockdevOptions
	if err := schema.Decode(f.unflatten(), &o); err != nil {
		return nil, nil, err
	}
	return &o, f, nil
}
