package objects

import (
	"encoding/binary"
	"io"
	"net"
	"sync"

	"go.uber.org/zap"

	"blockd/internal/errtext"
	"blockd/schema"
)

// prHelperInst is a pr-manager-helper object (QEMU's
// scsi/pr-manager-helper.c): a connection to qemu-pr-helper, which runs
// SCSI persistent reservation commands for a guest's passthrough disks
// (host_device nodes). blockd has no such guests or nodes; it makes the
// connection and its feature handshake as QEMU does, so that a helper
// that is missing or not listening is refused at object-add, and a file
// node's pr-manager may name the object. No command is ever sent.
type prHelperInst struct {
	id   string
	path *string

	mu   sync.Mutex
	conn net.Conn
}

func prHelperOf(inst any) *prHelperInst { return inst.(*prHelperInst) }

// PRManagerStatusChanged is PR_MANAGER_STATUS_CHANGED. It is not in
// qemu-storage-daemon 7.2's schema (it belongs to block.json), yet the
// daemon sends it when a helper connection is made or lost; blockd does
// the same and leaves it out of its schema too.
type PRManagerStatusChanged struct {
	ID        string `qapi:"id"`
	Connected bool   `qapi:"connected"`
}

// EventName implements events.Payload.
func (PRManagerStatusChanged) EventName() string { return "PR_MANAGER_STATUS_CHANGED" }

func init() {
	RegisterClass(&Class{Name: "pr-manager", Parent: "object", Abstract: true,
		Interfaces: []string{"user-creatable"}})
	RegisterClass(&Class{Name: "pr-manager-helper", Parent: "pr-manager",
		Props: []Property{strProp("path", func(inst any) **string { return &prHelperOf(inst).path })},
		Init: func(o *ObjectOptions) (any, error) {
			p := &prHelperInst{id: o.ID}
			if o.PrManagerHelper != nil { // path is required: decoding checked it
				p.path = &o.PrManagerHelper.Path
			}
			return p, nil
		},
		Complete: func(r *Registry, inst any) error { return prHelperOf(inst).connect(r) },
		Finalize: func(inst any) { prHelperOf(inst).close() },
	})
}

// connect is pr_manager_helper_initialize: connect, read the helper's
// feature flags, answer that we want none.
func (p *prHelperInst) connect(r *Registry) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	path := str(p.path)
	c, err := net.Dial("unix", path)
	if err != nil {
		return schema.Errorf("Failed to connect to '%s': %s", path, errtext.Strerror(errtext.Errno(err)))
	}
	var flags [4]byte
	if _, err := io.ReadFull(c, flags[:]); err != nil {
		// A read failure counts as losing the connection, which the
		// reference announces before failing.
		_ = c.Close()
		r.publish(PRManagerStatusChanged{ID: p.id, Connected: false})
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return schema.Errorf("Unexpected end-of-file before all data were read")
		}
		return schema.Errorf("Unable to read from socket: %s", errtext.Strerror(errtext.Errno(err)))
	}
	binary.NativeEndian.PutUint32(flags[:], 0)
	if _, err := c.Write(flags[:]); err != nil {
		_ = c.Close()
		r.publish(PRManagerStatusChanged{ID: p.id, Connected: false})
		return schema.Errorf("Unable to write to socket: %s", errtext.Strerror(errtext.Errno(err)))
	}
	p.conn = c
	r.publish(PRManagerStatusChanged{ID: p.id, Connected: true})
	r.log.Info("connected to the persistent reservation helper", zap.String("id", p.id), zap.String("path", path))
	return nil
}

// close is the instance's finalization: the connection ends, without
// an event.
func (p *prHelperInst) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		_ = p.conn.Close()
		p.conn = nil
	}
}

// PRManager checks that id names a persistent reservation manager, for
// a file node's pr-manager option (pr_manager_lookup).
func (r *Registry) PRManager(id string) error {
	obj := r.lookup(id)
	if obj == nil {
		return schema.Errorf("No persistent reservation manager with id '%s'", id)
	}
	if !obj.class.is("pr-manager") {
		return schema.Errorf("Object with id '%s' is not a persistent reservation manager", id)
	}
	return nil
}
