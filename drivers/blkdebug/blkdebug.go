// Package blkdebug owns the blkdebug test driver: a filter over its
// "image" child that injects errors into requests and moves through
// states when block-layer events happen, following rules given inline
// (inject-error, set-state) or in a config file, and that presents the
// request limits given in its options (align, max-transfer, opt-/max-
// write-zero and discard) by aligning and splitting what it sends down.
//
// Events: an inject-error rule becomes active when its event happens in
// its state; an active rule fails every request of its iotype (all but
// block-status by default) that covers its sector (any, by default), with
// its errno (EIO by default), and once removes it after one failure.
// blockd raises the events the block layer and a raw parent raise around
// a request on this node: read_aio before a read, write_aio, pwritev (or
// pwritev_zero) and pwritev_done around a write, the pwritev_rmw_* events
// of an unaligned write, flush_to_os and flush_to_disk on a flush, and
// none once at open. A qcow2 node directly above raises its own through
// DebugEvent (l2_load, l2_update, refblock_load, cluster_alloc, ...; see
// docs/differences.md for the list).
package blkdebug

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"syscall"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/internal/qdict"
	"blockd/schema"
)

func init() {
	// Protocol: blkdebug is a bdrv_file_open driver, so its own
	// "blkdebug:CONFIG:IMAGE" name can stand for its parents'.
	blockcore.RegisterDriver(&blockcore.Driver{Name: "blkdebug", Protocol: true, OwnChildren: true, Filter: true, IsFilter: true,
		FileChild: "image", Open: open})
}

type ioType int

const (
	ioRead ioType = iota
	ioWrite
	ioWriteZeroes
	ioDiscard
	ioFlush
	ioBlockStatus
)

var ioTypes = map[schema.BlkdebugIOType]ioType{"read": ioRead, "write": ioWrite, "write-zeroes": ioWriteZeroes,
	"discard": ioDiscard, "flush": ioFlush, "block-status": ioBlockStatus}

// rule is one inject-error or set-state rule.
type rule struct {
	event string
	state int64 // 0: any state
	// inject-error
	inject      bool
	iotypes     uint
	errno       int64
	offset      int64 // -1: any
	once        bool
	immediately bool
	// set-state
	newState int64
}

// node is one open blkdebug node.
type node struct {
	file   blockio.Device
	config string     // the config file, "" for none
	strong qdict.Dict // strong options, in json: insertion order
	image  *blockcore.Node

	align, maxTransfer         int64
	optWriteZero, maxWriteZero int64
	optDiscard, maxDiscard     int64
	takePerms, unsharePerms    blockio.Perm
	rmw                        *blockio.RangeLock // unaligned writes read, merge and write whole blocks

	mu     sync.Mutex
	state  int64
	rules  map[string][]*rule // per event, newest first (QLIST_INSERT_HEAD)
	active []*rule            // rules armed by the last event that armed any
}

func open(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	o := oc.Options.Blkdebug
	n := &node{file: oc.File.Node.IO(), image: oc.File.Node, rules: map[string][]*rule{},
		rmw: blockio.NewRangeLock()}
	// The options QemuOpts parses as sizes, before anything else.
	for _, sz := range []struct {
		name string
		v    *int64
	}{{"align", o.Align}, {"max-transfer", i32(o.MaxTransfer)}, {"opt-write-zero", i32(o.OptWriteZero)},
		{"max-write-zero", i32(o.MaxWriteZero)}, {"opt-discard", i32(o.OptDiscard)}, {"max-discard", i32(o.MaxDiscard)}} {
		if sz.v != nil && *sz.v < 0 {
			return nil, schema.Errorf("Parameter '%s' expects a non-negative number below 2^64", sz.name)
		}
	}
	inject, set := o.InjectError, o.SetState
	if o.Config != nil {
		n.config = *o.Config
		fi, fs, err := readConfig(*o.Config)
		if err != nil {
			return nil, schema.Errorf("%s", err)
		}
		// Config file rules first, then the inline ones.
		inject, set = append(fi, inject...), append(fs, set...)
	}
	for _, r := range inject {
		x := &rule{event: string(r.Event), inject: true, errno: int64(syscall.EIO), offset: -1,
			iotypes: 1<<ioRead | 1<<ioWrite | 1<<ioWriteZeroes | 1<<ioDiscard | 1<<ioFlush}
		if r.State != nil {
			x.state = *r.State
		}
		if r.Iotype != nil {
			t, ok := ioTypes[*r.Iotype]
			if !ok {
				return nil, schema.Errorf("Parameter 'iotype' does not accept value '%s'", *r.Iotype)
			}
			x.iotypes = 1 << t
		}
		if r.Errno != nil {
			x.errno = *r.Errno
		}
		if r.Sector != nil && *r.Sector != -1 {
			x.offset = *r.Sector * 512
		}
		x.once = r.Once != nil && *r.Once
		x.immediately = r.Immediately != nil && *r.Immediately
		n.addRule(x)
	}
	for _, r := range set {
		x := &rule{event: string(r.Event), newState: r.NewState}
		if r.State != nil {
			x.state = *r.State
		}
		n.addRule(x)
	}
	n.recordStrong(o)
	n.state = 1
	for _, p := range o.TakeChildPerms {
		n.takePerms |= permOf(p)
	}
	for _, p := range o.UnshareChildPerms {
		n.unsharePerms |= permOf(p)
	}
	if err := n.limits(o); err != nil {
		return nil, err
	}
	n.event("none")
	return n, nil
}

func i32(p *int32) *int64 {
	if p == nil {
		return nil
	}
	v := int64(*p)
	return &v
}

func permOf(p schema.BlockPermission) blockio.Perm {
	for i, name := range []schema.BlockPermission{"consistent-read", "write", "write-unchanged", "resize"} {
		if p == name {
			return 1 << i
		}
	}
	return 0
}

// limits checks the request limits as blkdebug_open does, against the
// alignment the image already requires (1 byte for blockd's drivers).
func (n *node) limits(o *schema.BlockdevOptionsBlkdebug) error {
	get := func(p *int64) int64 {
		if p == nil {
			return 0
		}
		return *p
	}
	bad := func(v, to int64) bool { return v != 0 && (v >= math.MaxInt32 || v%to != 0) }
	n.align = get(o.Align)
	if n.align != 0 && (n.align >= math.MaxInt32 || n.align&(n.align-1) != 0) {
		return schema.Errorf("Cannot meet constraints with align %d", n.align)
	}
	align := max(n.align, 1)
	checks := []struct {
		name string
		dst  *int64
		to   func() int64
	}{
		{"max-transfer", &n.maxTransfer, func() int64 { return align }},
		{"opt-write-zero", &n.optWriteZero, func() int64 { return align }},
		{"max-write-zero", &n.maxWriteZero, func() int64 { return max(n.optWriteZero, align) }},
		{"opt-discard", &n.optDiscard, func() int64 { return align }},
		{"max-discard", &n.maxDiscard, func() int64 { return max(n.optDiscard, align) }},
	}
	vals := []*int32{o.MaxTransfer, o.OptWriteZero, o.MaxWriteZero, o.OptDiscard, o.MaxDiscard}
	for i, c := range checks {
		*c.dst = get(i32(vals[i]))
		if bad(*c.dst, c.to()) {
			return schema.Errorf("Cannot meet constraints with %s %d", c.name, *c.dst)
		}
	}
	return nil
}

// recordStrong keeps the options that change what the node does, for
// json: filenames, in the order append_strong_runtime_options inserts
// them: config, the inject-error. and set-state. entries in the order
// the node's flat options (given in their natural order) iterate, then
// the limits.
func (n *node) recordStrong(o *schema.BlockdevOptionsBlkdebug) {
	var flat qdict.Dict
	for i, r := range o.InjectError {
		p := fmt.Sprintf("inject-error.%d.", i)
		flat = flat.Set(p+"event", string(r.Event))
		flat = setIf(flat, p+"state", r.State)
		if r.Iotype != nil {
			flat = flat.Set(p+"iotype", string(*r.Iotype))
		}
		flat = setIf(flat, p+"errno", r.Errno)
		flat = setIf(flat, p+"sector", r.Sector)
		flat = setIf(flat, p+"once", r.Once)
		flat = setIf(flat, p+"immediately", r.Immediately)
	}
	for i, r := range o.SetState {
		p := fmt.Sprintf("set-state.%d.", i)
		flat = flat.Set(p+"event", string(r.Event))
		flat = setIf(flat, p+"state", r.State)
		flat = flat.Set(p+"new_state", r.NewState)
	}
	n.strong = setIf(nil, "config", o.Config)
	for _, prefix := range []string{"inject-error.", "set-state."} {
		for _, e := range flat.Ordered() {
			if strings.HasPrefix(e.Key, prefix) {
				n.strong = n.strong.Set(e.Key, e.Val)
			}
		}
	}
	n.strong = setIf(n.strong, "align", o.Align)
	n.strong = setIf(n.strong, "max-transfer", o.MaxTransfer)
	n.strong = setIf(n.strong, "opt-write-zero", o.OptWriteZero)
	n.strong = setIf(n.strong, "max-write-zero", o.MaxWriteZero)
	n.strong = setIf(n.strong, "opt-discard", o.OptDiscard)
	n.strong = setIf(n.strong, "max-discard", o.MaxDiscard)
}

func setIf[T any](d qdict.Dict, key string, v *T) qdict.Dict {
	if v != nil {
		return d.Set(key, *v)
	}
	return d
}

// addRule files a rule under its event, newest first.
func (n *node) addRule(r *rule) {
	n.rules[r.event] = append([]*rule{r}, n.rules[r.event]...)
}

// event is blkdebug_debug_event: the rules of the event that apply in the
// current state act; armed inject-error rules replace the active set, and
// the state changes after all have been looked at.
// DebugEvent takes the events of a format driver above (blockio.DebugEventer).
func (n *node) DebugEvent(ev string) { n.event(ev) }

func (n *node) event(ev string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	newState := n.state
	injected := 0
	for _, r := range n.rules[ev] {
		if r.state != 0 && r.state != n.state {
			continue
		}
		if r.inject {
			injected++
			if injected == 1 {
				n.active = nil
			}
			n.active = append([]*rule{r}, n.active...)
		} else {
			newState = r.newState
		}
	}
	n.state = newState
}

// check is rule_check: the first active rule of the request's type that
// covers its offset fails it; a once rule is used up.
func (n *node) check(off, length int64, t ioType) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, r := range n.active {
		if r.iotypes&(1<<t) == 0 {
			continue
		}
		if r.offset != -1 && !(length > 0 && r.offset >= off && r.offset < off+length) {
			continue
		}
		if r.errno == 0 {
			return nil
		}
		if r.once {
			n.active = append(n.active[:i:i], n.active[i+1:]...)
			n.removeRule(r)
		}
		return syscall.Errno(r.errno)
	}
	return nil
}

func (n *node) removeRule(r *rule) {
	list := n.rules[r.event]
	for i, x := range list {
		if x == r {
			n.rules[r.event] = append(list[:i:i], list[i+1:]...)
			return
		}
	}
}

// chunks cuts [off, off+length) at max, as the block layer splits
// requests for a node's max-transfer.
func chunks(off, length, maxLen int64, f func(off, length int64) error) error {
	for length > 0 {
		n := length
		if maxLen > 0 {
			n = min(n, maxLen)
		}
		if err := f(off, n); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

func (n *node) alignment() int64 { return max(n.align, 1) }

// ReadAt reads the aligned range around the request in chunks of at most
// max-transfer, each checked against the active rules.
func (n *node) ReadAt(p []byte, off int64) error {
	n.event("read_aio")
	a := n.alignment()
	start, end := off/a*a, (off+int64(len(p))+a-1)/a*a
	buf := p
	if start != off || end != off+int64(len(p)) {
		buf = make([]byte, end-start)
	}
	err := chunks(start, end-start, n.maxTransfer, func(o, l int64) error {
		if err := n.check(o, l, ioRead); err != nil {
			return err
		}
		return n.file.ReadAt(buf[o-start:o-start+l], o)
	})
	if err == nil && len(buf) != len(p) {
		copy(p, buf[off-start:])
	}
	return err
}

// WriteAt writes whole aligned blocks: an unaligned head or tail is read
// first and merged (the block layer's read-modify-write, with its
// events), under a range lock so that two unaligned writes to one block
// do not undo each other.
func (n *node) WriteAt(p []byte, off int64, f blockio.WriteFlags) error {
	n.event("write_aio")
	a := n.alignment()
	start, end := off/a*a, (off+int64(len(p))+a-1)/a*a
	buf := p
	if start != off || end != off+int64(len(p)) {
		defer n.rmw.Lock(start, end-start)()
		buf = make([]byte, end-start)
		if start != off {
			n.event("pwritev_rmw_head")
			if err := n.file.ReadAt(buf[:a], start); err != nil {
				return err
			}
			n.event("pwritev_rmw_after_head")
		}
		if end != off+int64(len(p)) && (end-a != start || start == off) {
			n.event("pwritev_rmw_tail")
			if err := n.file.ReadAt(buf[len(buf)-int(a):], end-a); err != nil {
				return err
			}
			n.event("pwritev_rmw_after_tail")
		}
		copy(buf[off-start:], p)
	}
	n.event("pwritev")
	err := chunks(start, end-start, n.maxTransfer, func(o, l int64) error {
		if err := n.check(o, l, ioWrite); err != nil {
			return err
		}
		return n.file.WriteAt(buf[o-start:o-start+l], o, f)
	})
	n.event("pwritev_done")
	return err
}

func (n *node) WriteZeroes(off, length int64, f blockio.WriteFlags) error {
	n.event("pwritev_zero")
	err := chunks(off, length, n.maxWriteZero, func(o, l int64) error {
		if err := n.check(o, l, ioWriteZeroes); err != nil {
			return err
		}
		return n.file.WriteZeroes(o, l, f)
	})
	n.event("pwritev_done")
	return err
}

func (n *node) Discard(off, length int64) error {
	return chunks(off, length, n.maxDiscard, func(o, l int64) error {
		if err := n.check(o, l, ioDiscard); err != nil {
			return err
		}
		return n.file.Discard(o, l)
	})
}

func (n *node) Flush() error {
	n.event("flush_to_os")
	n.event("flush_to_disk")
	if err := n.check(0, 0, ioFlush); err != nil {
		return err
	}
	return n.file.Flush()
}

func (n *node) BlockStatus(off, length int64) (blockio.Status, error) {
	if err := n.check(off, length, ioBlockStatus); err != nil {
		return blockio.Status{}, err
	}
	return n.file.BlockStatus(off, length)
}

// Backing is the child's: see blockio.BackingOf.
func (n *node) Backing() blockio.Device { return blockio.BackingOf(n.file) }

func (n *node) Size() (int64, error)      { return n.file.Size() }
func (n *node) Truncate(size int64) error { return n.file.Truncate(size) }
func (n *node) Close() error              { return nil }

// ChildPerm is blkdebug_child_perm: the filter's defaults, plus what
// take-child-perms adds, minus what unshare-child-perms takes away.
func (n *node) ChildPerm(c *blockcore.Child, st blockcore.NodeState, perm, shared blockio.Perm) (blockio.Perm, blockio.Perm) {
	np, ns := blockcore.DefaultPerms(c.Role, st, perm, shared)
	return np | n.takePerms, ns &^ n.unsharePerms
}

// ExactFilename is blkdebug_refresh_filename: "blkdebug:CONFIG:IMAGE"
// while no option but the config file changes the node and the image has
// a name of its own; otherwise queries describe it with a json: filename.
func (n *node) ExactFilename() string {
	for _, e := range n.strong {
		if e.Key != "config" {
			return ""
		}
	}
	f, ok := n.image.Impl().(blockcore.Filenamer)
	if !ok || !n.image.Driver().Protocol || f.ExactFilename() == "" {
		return ""
	}
	return "blkdebug:" + n.config + ":" + f.ExactFilename()
}

func (n *node) StrongOptionList() qdict.Dict { return n.strong }

// AllocatedSize: as a bdrv_file_open driver without its own answer,
// blkdebug reports no allocation.
func (n *node) AllocatedSize() (int64, bool) { return 0, false }

// SetFile follows a reopen that switched the image child.
func (n *node) SetFile(dev blockio.Device) { n.file = dev }

// ReopenPrepare is blkdebug_reopen_prepare: it accepts the reopen and
// changes nothing; the options must stay as they are.
func (n *node) ReopenPrepare(*blockcore.ReopenState) (commit, abort func(), err error) {
	return func() {}, func() {}, nil
}
