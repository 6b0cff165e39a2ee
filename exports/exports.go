// Package exports owns the export registry: block-export-add/del,
// query-block-exports and BLOCK_EXPORT_DELETED, the NBD server's QMP
// commands (nbd-server-start/stop and the legacy nbd-server-add/remove)
// and the type=fuse branch of block-export-add. Each export is a user of
// its node through one graph edge with the permissions QEMU's export
// BlockBackend takes (consistent-read, plus write when writable; sharing
// everything), and does its I/O through that edge, so it follows node
// replacement (active commit, snapshot) as a BlockBackend does.
//
// Every method runs on the graph owner goroutine.
package exports

import (
	"slices"
	"time"

	"go.uber.org/zap"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/events"
	"blockd/internal/qemu"
	"blockd/nbd"
	"blockd/objects"
	"blockd/schema"
)

// TLSProvider resolves nbd-server-start's tls-creds and tls-authz
// (the objects registry).
type TLSProvider interface {
	TLSServer(id string, authzID *string) (objects.ServerTLS, error)
}

// FuseOptions are what a fuse export needs from block-export-add.
type FuseOptions struct {
	Mountpoint string
	Writable   bool
	Growable   bool
	AllowOther string // "on", "off" or "auto"
}

// FuseExport is a mounted fuse export.
type FuseExport interface {
	Unmount() error
}

// FuseMount mounts dev at o.Mountpoint (package exports/fuse).
type FuseMount func(dev blockio.Device, o FuseOptions) (FuseExport, error)

// Registry is the set of exports and the NBD server.
type Registry struct {
	g     *blockcore.Graph
	owner *blockcore.Owner
	bus   *events.Bus
	log   *zap.Logger

	// TLS resolves tls-creds/tls-authz; nil until the objects registry
	// is wired, and then every tls-creds names an unknown object.
	TLS TLSProvider
	// Fuse mounts fuse exports; nil refuses type=fuse.
	Fuse FuseMount

	list   []*export // in the order added
	server *nbdServer
}

// New returns an empty registry.
func New(g *blockcore.Graph, owner *blockcore.Owner, bus *events.Bus, log *zap.Logger) *Registry {
	if log == nil {
		log = zap.NewNop()
	}
	return &Registry{g: g, owner: owner, bus: bus, log: log}
}

// export is one export and the edge through which it uses its node.
type export struct {
	id           string
	typ          schema.BlockExportType
	edge         *blockcore.Child
	nbd          *nbd.Export
	fuse         FuseExport
	shuttingDown bool
	finished     bool
	bitmaps      []*blockcore.DirtyBitmap // exported, busy while the export lives
	stats        blockcore.IOStats        // requests of the export's clients (stats.go)
}

// user is an export as a parent in the graph: an anonymous BlockBackend,
// as QEMU's export holds (blockdev-del then says "Node x is in use").
type user struct{ x *export }

func (user) ParentDesc() string                        { return "an unnamed block device" }
func (user) VertexType() schema.XDbgBlockGraphNodeType { return "block-backend" }
func (user) VertexName() string                        { return "" }

func (r *Registry) find(id string) *export {
	for _, x := range r.list {
		if x.id == id {
			return x
		}
	}
	return nil
}

// Add is block-export-add (blk_exp_add), its checks in QEMU's order.
func (r *Registry) Add(a *schema.BlockExportOptions) error {
	if !qemu.IDWellFormed(a.ID) {
		return schema.Errorf("Invalid block export id")
	}
	if r.find(a.ID) != nil {
		return schema.Errorf("Block export id '%s' is already in use", a.ID)
	}
	switch a.Type {
	case "nbd":
	case "fuse":
		if r.Fuse == nil {
			return schema.Errorf("No driver found for the requested export type")
		}
	default:
		// vhost-user-blk and vduse-blk need a virtio device model blockd
		// does not have (docs/exports.md).
		return schema.Errorf("No driver found for the requested export type")
	}
	n := r.g.Lookup(a.NodeName)
	if n == nil {
		return schema.Errorf("Cannot find device='' nor node-name='%s'", a.NodeName)
	}
	writable := a.Writable != nil && *a.Writable
	if writable && n.ReadOnly() {
		return schema.Errorf("Cannot export read-only node as writable")
	}
	var name, desc string
	if a.Type == "nbd" {
		if r.server == nil {
			return schema.Errorf("NBD server not running")
		}
		o := a.Nbd
		name = a.NodeName
		if o != nil && o.Name != nil {
			name = *o.Name
		}
		if o != nil && o.Description != nil {
			desc = *o.Description
		}
		if len(name) > nbd.MaxString {
			return schema.Errorf("export name '%s' too long", name)
		}
		if len(desc) > nbd.MaxString {
			return schema.Errorf("description '%s' too long", desc)
		}
		if r.server.srv.Lookup(name) != nil {
			return schema.Errorf("NBD server already has export named '%s'", name)
		}
	}
	x := &export{id: a.ID, typ: a.Type}
	perm := blockio.PermConsistentRead
	if writable {
		perm |= blockio.PermWrite
	}
	// QEMU's export BlockBackend shares everything; then an NBD export
	// keeps the size it announced (no resize by others), and a fuse
	// export that may change the size takes resize itself, each as a
	// second step with its own refusal.
	edge, err := r.g.AttachUser(user{x}, n, "root", perm, blockio.PermAll)
	if err != nil {
		return err
	}
	switch {
	case a.Type == "nbd":
		err = r.g.SetUserPerm(edge, perm, blockio.PermAll&^blockio.PermResize)
	case a.Type == "fuse" && (writable || a.Fuse.Growable != nil && *a.Fuse.Growable):
		err = r.g.SetUserPerm(edge, perm|blockio.PermResize, blockio.PermAll)
	}
	if err != nil {
		r.g.DetachUser(edge)
		return err
	}
	x.edge = edge
	var dev blockio.Device = counted{edge.IO(), &x.stats}
	if a.Writethrough != nil && *a.Writethrough {
		dev = writethrough{dev}
	}
	size, err := dev.Size()
	if err != nil {
		r.g.DetachUser(edge)
		return schema.Errorf("Failed to determine the NBD export's length")
	}
	switch a.Type {
	case "nbd":
		var bitmaps []nbd.Bitmap
		if a.Nbd != nil {
			if bitmaps, x.bitmaps, err = r.exportBitmaps(n, a.Nbd.Bitmaps, !writable); err != nil {
				r.g.DetachUser(edge)
				return err
			}
		}
		x.nbd = &nbd.Export{
			Name: name, Description: desc, Dev: dev, Size: size,
			ReadOnly: !writable, MultiConn: true,
			AllocationDepth: a.Nbd != nil && a.Nbd.AllocationDepth != nil && *a.Nbd.AllocationDepth,
			Bitmaps:         bitmaps,
		}
		if err := r.server.srv.AddExport(x.nbd); err != nil {
			r.g.DetachUser(edge)
			return schema.Errorf("NBD server already has export named '%s'", name)
		}
		// Busy only once nothing can fail, so a refusal leaves none busy.
		for _, d := range x.bitmaps {
			d.SetBusy(true)
		}
	case "fuse":
		o := FuseOptions{Mountpoint: a.Fuse.Mountpoint, Writable: writable, AllowOther: "auto"}
		if a.Fuse.Growable != nil {
			o.Growable = *a.Fuse.Growable
		}
		if a.Fuse.AllowOther != nil {
			o.AllowOther = string(*a.Fuse.AllowOther)
		}
		f, err := r.Fuse(dev, o)
		if err != nil {
			r.g.DetachUser(edge)
			return schema.Errorf("%s", err)
		}
		x.fuse = f
	}
	r.list = append(r.list, x)
	return nil
}

// leavingClientsGrace bounds how long block-export-del waits for clients
// that have hung up to finish what they sent before it calls the export
// still in use.
const leavingClientsGrace = 5 * time.Second

// Del is block-export-del.
func (r *Registry) Del(id string, mode *schema.BlockExportRemoveMode) error {
	x := r.find(id)
	if x == nil {
		return schema.Errorf("Export '%s' is not found", id)
	}
	if x.shuttingDown {
		return schema.Errorf("Export '%s' is already shutting down", id)
	}
	hard := mode != nil && *mode == "hard"
	if !hard && x.nbd != nil && x.nbd.ConnectionsStaying(leavingClientsGrace) > 0 {
		return schema.Errorf("export '%s' still in use", id)
	}
	r.shutdown(x, hard, false)
	return nil
}

// shutdown takes x away. With hard, clients are disconnected; otherwise
// a client that still holds the export keeps it until it leaves. Without
// clients the export is gone (event included) when shutdown returns, as
// in QEMU; with clients that happens once they have left, on the owner,
// unless wait asks to wait for them here (nbd-server-stop and shutdown,
// which QEMU also completes before replying).
func (r *Registry) shutdown(x *export, hard, wait bool) {
	x.shuttingDown = true
	if x.nbd == nil {
		r.finish(x)
		return
	}
	busy := x.nbd.Connections() > 0
	done := make(chan struct{})
	r.server.srv.RemoveExport(x.nbd, hard, func() { close(done) })
	if wait {
		<-done // the clients' goroutines end without the owner
	}
	select {
	case <-done:
		if !busy || wait {
			r.finish(x)
			return
		}
	default:
	}
	go func() {
		<-done
		_ = r.owner.Do(func() { r.finish(x) })
	}()
}

// finish releases what x held and announces its end.
func (r *Registry) finish(x *export) {
	if x.finished {
		return // CloseAll came first
	}
	x.finished = true
	if x.fuse != nil {
		if err := x.fuse.Unmount(); err != nil {
			r.log.Warn("unmounting fuse export failed", zap.String("id", x.id), zap.Error(err))
		}
	}
	if i := slices.Index(r.list, x); i >= 0 {
		r.list = slices.Delete(r.list, i, i+1)
	}
	for _, d := range x.bitmaps {
		d.SetBusy(false)
	}
	r.g.DetachUser(x.edge)
	r.bus.Publish(schema.BlockExportDeleted{ID: x.id})
}

// Query is query-block-exports: newest first, as QEMU lists them.
func (r *Registry) Query() []schema.BlockExportInfo {
	out := []schema.BlockExportInfo{}
	for i := len(r.list) - 1; i >= 0; i-- {
		x := r.list[i]
		out = append(out, schema.BlockExportInfo{ID: x.id, Type: x.typ,
			NodeName: x.edge.Node.Name(), ShuttingDown: x.shuttingDown})
	}
	return out
}

// CloseAll removes every export and stops the NBD server (shutdown).
func (r *Registry) CloseAll() {
	if r.server != nil {
		r.server.close() // disconnects every client
	}
	r.closeAll(func(*export) bool { return true })
	r.server = nil
}

// closeAll finishes the exports keep selects, once the NBD server has no
// client left: those already shutting down are finished here rather than
// by their pending goroutine.
func (r *Registry) closeAll(keep func(*export) bool) {
	for _, x := range slices.Clone(r.list) {
		switch {
		case !keep(x):
		case x.shuttingDown:
			r.finish(x)
		default:
			r.shutdown(x, true, true)
		}
	}
}

// writethrough makes every write FUA (writethrough=on: QEMU's
// BlockBackend without a write cache).
type writethrough struct{ blockio.Device }

func (w writethrough) WriteAt(p []byte, off int64, f blockio.WriteFlags) error {
	return w.Device.WriteAt(p, off, f|blockio.FUA)
}

func (w writethrough) EndsRequests() bool { return blockio.EndsRequests(w.Device) }

func (w writethrough) StartReadAt(p []byte, off int64, done func(error)) bool {
	return blockio.StartReadAt(w.Device, p, off, done)
}

func (w writethrough) StartWriteAt(p []byte, off int64, f blockio.WriteFlags, done func(error)) bool {
	return blockio.StartWriteAt(w.Device, p, off, f|blockio.FUA, done)
}

func (w writethrough) WriteZeroes(off, n int64, f blockio.WriteFlags) error {
	return w.Device.WriteZeroes(off, n, f|blockio.FUA)
}

// Backing keeps block status through the chain working.
func (w writethrough) Backing() blockio.Device { return blockio.BackingOf(w.Device) }

// exportBitmaps resolves an NBD export's bitmaps as nbd_export_create
// does: a bare name is looked for on the node and down its chain, a
// node/name pair on that node; an enabled bitmap of a writable node
// cannot be exported read-only (its bits would move under the reader).
func (r *Registry) exportBitmaps(n *blockcore.Node, list []schema.BlockDirtyBitmapOrStr, readOnly bool) ([]nbd.Bitmap, []*blockcore.DirtyBitmap, error) {
	var out []nbd.Bitmap
	var used []*blockcore.DirtyBitmap
	for _, b := range list {
		var d *blockcore.DirtyBitmap
		var name string
		if b.Local != nil {
			name = *b.Local
			var holder *blockcore.Node
			if holder, d = blockcore.FindChainBitmap(n, name); d == nil {
				return nil, nil, schema.Errorf("Bitmap '%s' is not found", name)
			}
			if readOnly && holder.Writable() && d.Enabled() {
				return nil, nil, schema.Errorf("Enabled bitmap '%s' incompatible with readonly export", name)
			}
		} else {
			name = b.External.Name
			var err error
			if _, d, err = r.g.LookupBitmap(b.External.Node, name); err != nil {
				return nil, nil, err
			}
		}
		if err := d.Check(blockcore.CheckAllowRO); err != nil {
			return nil, nil, err
		}
		bits := d.Bits()
		out = append(out, nbd.Bitmap{Name: name, Status: func(off, length int64) (bool, int64, error) {
			dirty := bits.Get(off)
			var next int64
			if dirty {
				next = bits.NextClean(off)
			} else if next = bits.NextDirty(off); next < 0 {
				next = off + length
			}
			return dirty, min(max(next-off, 1), length), nil
		}})
		used = append(used, d)
	}
	return out, used, nil
}
