package blockcore

import (
	"slices"

	"blockd/schema"
)

// Generic runtime options the block layer takes from a reopen's options
// (bdrv_runtime_opts), and those it gives back as strings.
var (
	genericTaken    = []string{"read-only", "auto-read-only", "cache.direct", "cache.no-flush"}
	genericReturned = []string{"node-name", "driver", "force-share"}
)

// checkReset refuses a reopen of a driver that cannot reopen, and one
// that leaves out an option the node has which may not go back to its
// default (bdrv_reset_options_allowed): the checks before any option's
// value is compared.
func checkReset(n *Node, opts *flatOpts) error {
	if !reopenable(n) {
		return schema.Errorf("Block format '%s' used by node '%s' does not support reopening files", n.drv.Name, n.name)
	}
	spec := reopenSpecs[n.drv.Name]
	for _, k := range n.explicitOptions().ordered() {
		if !opts.has(k) && !slices.Contains(resetIgnore, k) && !slices.Contains(spec.mutable, k) {
			return schema.Errorf("Option '%s' cannot be reset to its default value", k)
		}
	}
	return nil
}

// prepareEntry is bdrv_reopen_prepare: check every option of the entry in
// QEMU's order, let the driver prepare, switch children within t. On
// error nothing of the entry stays prepared once t aborts.
func (g *Graph) prepareEntry(e *reopenEntry, t *tx) error {
	n := e.n
	opts := e.options.clone() // what is left to account for
	for _, k := range genericTaken {
		opts.del(k)
	}
	unmap := n.reopen.discardUnmap
	if v, ok := opts.get("discard"); ok {
		unmap = v == "unmap" || v == "on"
		opts.del("discard")
	}
	dz := opts.strOpt("detect-zeroes", "off")
	opts.del("detect-zeroes")
	if dz == "unmap" && !unmap {
		return schema.Errorf("setting detect-zeroes to unmap is not allowed without setting discard operation to unmap")
	}
	e.state.DiscardUnmap, e.detectZeroes = unmap, dz
	for _, k := range genericReturned {
		if v, ok := opts.get(k); ok {
			opts.reinsert(k, stringified(v))
		}
	}

	if err := checkReset(n, opts); err != nil {
		return err
	}
	spec := reopenSpecs[n.drv.Name]

	e.state.opts = opts.clone()
	for _, k := range spec.consumed {
		opts.del(k)
	}
	for _, k := range spec.stringify {
		if v, ok := opts.get(k); ok {
			opts.reinsert(k, stringified(v))
		}
	}
	if err := n.reopenBitmapsPrepare(e.state.ReadOnly, t); err != nil {
		return err
	}
	if r, ok := n.impl.(Reopener); ok {
		commit, abort, err := r.ReopenPrepare(&e.state)
		if err != nil {
			return err
		}
		if abort != nil {
			t.onAbort(abort)
		}
		e.commit = commit
	}

	if n.drv.SupportsBacking && e.backingMissing && (n.Backing() != nil || headerBacking(n) != "") {
		return schema.Errorf("backing is missing for '%s'", n.name)
	}
	if err := g.reopenChild(e, opts, "backing", t); err != nil {
		return err
	}
	opts.del("backing")
	if err := g.reopenChild(e, opts, "file", t); err != nil {
		return err
	}
	opts.del("file")

	// Whatever is left was not taken by anyone: it may only repeat the
	// current value, or name the current child.
	old := n.effectiveOptions()
	for _, k := range opts.ordered() {
		v := opts.vals[k]
		if s, ok := v.(string); ok {
			if c := n.Child(k); c != nil && c.Node.name == s {
				continue
			}
		}
		if ov, ok := old.get(k); !ok || !sameOption(v, ov) {
			return schema.Errorf("Cannot change the option '%s'", k)
		}
	}

	typed, typedFrom, err := typedOptions(n, e.options, n.File(), n.Backing(), n.drv.SupportsBacking)
	if err != nil {
		return schema.Errorf("failed while preparing to reopen image '%s'", Filename(n))
	}
	e.typed, e.typedFrom = typed, typedFrom
	return nil
}

// headerBacking is the backing file the image header names (QEMU's
// bs->backing_file), which a reopen must account for.
func headerBacking(n *Node) string {
	if bu, ok := n.impl.(BackingUser); ok {
		name, _ := bu.BackingFile()
		return name
	}
	return ""
}

// commitEntry is bdrv_reopen_commit: the driver's commit and the node's
// new state. It runs while the node is drained.
func (g *Graph) commitEntry(e *reopenEntry) {
	n := e.n
	if e.commit != nil {
		e.commit()
	}
	wasRO := n.readOnly
	n.readOnly = e.state.ReadOnly
	n.io.readOnly = e.state.ReadOnly
	n.reopenBitmapsCommit(wasRO)
	n.io.detectZeroes = e.detectZeroes
	if n.io.detectZeroes == "off" {
		n.io.detectZeroes = ""
	}
	n.reopen.autoReadOnly = e.state.AutoReadOnly
	n.reopen.discardUnmap = e.state.DiscardUnmap
	n.io.discardUnmap = e.state.DiscardUnmap
	n.reopen.explicit = withoutChildren(e.explicit.clone())
	if e.typed != nil {
		n.options = e.typed
		n.cacheOf().typedFrom = e.typedFrom
	}
	g.notifyChildren(e)
}
