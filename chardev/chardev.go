// Package chardev owns blockd's character devices: the backends that
// --chardev and chardev-add open (null, ringbuf/memory, file, pipe,
// socket, stdio, pty, udp, serial, parallel), their place in the QOM
// tree under /chardevs, and the commands chardev-add, chardev-change,
// chardev-remove, chardev-send-break, query-chardev,
// query-chardev-backends, ringbuf-read and ringbuf-write, with
// qemu-storage-daemon's replies and texts.
//
// blockd has no guest devices, so a chardev's only possible user
// (frontend) is a QMP monitor given on the command line; the reference
// has no command to start a monitor at run time either. A chardev
// without a user holds its resources (files, sockets, a pty) and drops
// what it would receive, as the reference's do; a ring buffer keeps what
// ringbuf-write puts in it for ringbuf-read.
package chardev

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"sync"

	"go.uber.org/zap"

	"blockd/internal/qemu"
	"blockd/objects"
	"blockd/schema"
)

// Chardev is one open character device.
type Chardev struct {
	id   string
	kind string // the backend kind, e.g. "socket"

	mu       sync.Mutex
	filename string // query-chardev's filename, which may change (sockets)
	frontend bool   // a monitor uses it (query-chardev's frontend-open)
	busy     bool   // it has a user: a monitor, or a mux over it

	ring  *ring       // ringbuf and memory
	sock  *socketDev  // socket
	files []io.Closer // what closing the chardev closes
	stdio bool
}

func (c *Chardev) setFilename(f string) {
	c.mu.Lock()
	c.filename = f
	c.mu.Unlock()
}

func (c *Chardev) info() Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Info{Label: c.id, Filename: c.filename, FrontendOpen: c.frontend}
}

func (c *Chardev) close() {
	if c.sock != nil {
		c.sock.close()
	}
	for _, f := range c.files {
		_ = f.Close()
	}
}

// Registry holds the chardevs by id; their QOM objects live in the
// objects registry's /chardevs container, whose order query-chardev
// follows.
type Registry struct {
	log  *zap.Logger
	objs *objects.Registry

	quit <-chan struct{} // closed at shutdown: ends a socket's wait for a client

	mu        sync.Mutex
	devs      map[string]*Chardev
	daemonize bool
}

// SetQuit gives the channel closed when blockd shuts down.
func (r *Registry) SetQuit(quit <-chan struct{}) { r.quit = quit }

// NewRegistry returns an empty chardev registry over the QOM tree.
func NewRegistry(log *zap.Logger, objs *objects.Registry) *Registry {
	if log == nil {
		log = zap.NewNop()
	}
	return &Registry{log: log, objs: objs, devs: map[string]*Chardev{}}
}

// SetDaemonize records that blockd detaches from its terminal, which
// rules out stdio chardevs.
func (r *Registry) SetDaemonize(on bool) {
	r.mu.Lock()
	r.daemonize = on
	r.mu.Unlock()
}

// Lookup returns the chardev id, or nil.
func (r *Registry) Lookup(id string) *Chardev {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.devs[id]
}

// Add opens a chardev (chardev-add and --chardev). The error is the
// backend's text; chardev-add prefixes it.
func (r *Registry) Add(id string, b *Backend) (*Chardev, *Return, error) {
	r.mu.Lock()
	_, dup := r.devs[id]
	r.mu.Unlock()
	if dup {
		return nil, nil, schema.Errorf("Chardev with id '%s' already exists", id)
	}
	c, ret, err := r.open(id, b)
	if err != nil {
		return nil, nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.devs[id]; dup { // added meanwhile by another monitor
		c.close()
		return nil, nil, schema.Errorf("Chardev with id '%s' already exists", id)
	}
	if err := r.objs.AddChild("chardevs", id, "chardev-"+c.kind, c); err != nil {
		c.close()
		return nil, nil, err
	}
	r.devs[id] = c
	r.log.Info("chardev added", zap.String("id", id), zap.String("backend", c.kind))
	return c, ret, nil
}

// Remove closes a chardev that no monitor uses.
func (r *Registry) Remove(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.devs[id]
	if c == nil {
		return schema.Errorf("Chardev '%s' not found", id)
	}
	c.mu.Lock()
	busy := c.busy
	c.mu.Unlock()
	if busy {
		return schema.Errorf("Chardev '%s' is busy", id)
	}
	r.remove(c)
	return nil
}

func (r *Registry) remove(c *Chardev) {
	delete(r.devs, c.id)
	r.objs.RemoveChild("chardevs", c.id)
	c.close()
	r.log.Info("chardev removed", zap.String("id", c.id))
}

// CloseAll closes every chardev (at shutdown).
func (r *Registry) CloseAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.devs {
		c.close()
	}
}

// change is qmp_chardev_change. A chardev without a user is closed and
// opened anew under the same id (if the new one fails, the id is gone,
// as in the reference); a monitor cannot take a new backend.
func (r *Registry) change(a *AddArgs) (*Return, error) {
	c := r.Lookup(a.ID)
	if c == nil {
		return nil, schema.Errorf("Chardev '%s' does not exist", a.ID)
	}
	if c.kind == "mux" {
		return nil, schema.Errorf("Mux device hotswap not supported yet")
	}
	c.mu.Lock()
	busy := c.busy
	c.mu.Unlock()
	if busy {
		return nil, schema.Errorf("Chardev user does not support chardev hotswap")
	}
	r.mu.Lock()
	if r.devs[a.ID] == c {
		r.remove(c)
	}
	r.mu.Unlock()
	return r.add(a)
}

func (r *Registry) add(a *AddArgs) (*Return, error) {
	_, ret, err := r.Add(a.ID, &a.Backend)
	if err != nil {
		if e := schema.AsError(err); e.Desc != fmt.Sprintf("Chardev with id '%s' already exists", a.ID) {
			return nil, schema.Errorf("Failed to add chardev '%s': %s", a.ID, e.Desc)
		}
		return nil, err
	}
	return ret, nil
}

// kinds are the backends blockd opens, in the order
// query-chardev-backends lists them (the reference's type table order).
var kinds = []string{"serial", "mux", "pipe", "parallel", "null", "ringbuf", "stdio", "socket", "file", "memory", "udp", "pty"}

// RegisterCommands declares the chardev commands and VSERPORT_CHANGE.
func (r *Registry) RegisterCommands(reg *schema.Registry) {
	schema.Define(reg, "chardev-add", func(_ context.Context, a *AddArgs) (*Return, error) {
		return r.add(a)
	})
	schema.Define(reg, "chardev-change", func(_ context.Context, a *AddArgs) (*Return, error) {
		return r.change(a)
	})
	schema.Define(reg, "chardev-remove", func(_ context.Context, a *IDArgs) (schema.Empty, error) {
		return schema.Empty{}, r.Remove(a.ID)
	})
	schema.Define(reg, "chardev-send-break", func(_ context.Context, a *IDArgs) (schema.Empty, error) {
		if r.Lookup(a.ID) == nil {
			return schema.Empty{}, schema.Errorf("Chardev '%s' not found", a.ID)
		}
		// A break is an event for the chardev's user; without a
		// device there is nobody to get it.
		return schema.Empty{}, nil
	})
	schema.Define(reg, "query-chardev", func(context.Context, *schema.NoArgs) ([]Info, error) {
		out := []Info{}
		for _, id := range r.objs.Children("chardevs") {
			if c := r.Lookup(id); c != nil {
				out = append(out, c.info())
			}
		}
		return out, nil
	})
	schema.Define(reg, "query-chardev-backends", func(context.Context, *schema.NoArgs) ([]BackendInfo, error) {
		out := []BackendInfo{}
		for _, k := range kinds {
			out = append(out, BackendInfo{Name: k})
		}
		return out, nil
	})
	schema.Define(reg, "ringbuf-write", func(_ context.Context, a *RingbufWriteArgs) (schema.Empty, error) {
		rb, err := r.ringbuf(a.Device)
		if err != nil {
			return schema.Empty{}, err
		}
		data := []byte(a.Data)
		if a.Format != nil && *a.Format == "base64" {
			if data, err = qemu.Base64Decode(a.Data); err != nil {
				return schema.Empty{}, schema.AsError(err)
			}
		}
		rb.write(data)
		return schema.Empty{}, nil
	})
	schema.Define(reg, "ringbuf-read", func(_ context.Context, a *RingbufReadArgs) (string, error) {
		rb, err := r.ringbuf(a.Device)
		if err != nil {
			return "", err
		}
		if a.Size <= 0 {
			return "", schema.Errorf("size must be greater than zero")
		}
		data := rb.read(a.Size)
		if a.Format != nil && *a.Format == "base64" {
			return base64.StdEncoding.EncodeToString(data), nil
		}
		// The reference returns the bytes as a C string: a NUL ends it
		// (invalid UTF-8 then becomes U+FFFD on the wire).
		for i, b := range data {
			if b == 0 {
				data = data[:i]
				break
			}
		}
		return string(data), nil
	})
	reg.AddEvent("VSERPORT_CHANGE", reflect.TypeFor[VserportChange]())
}

func (r *Registry) ringbuf(device string) (*ring, error) {
	c := r.Lookup(device)
	if c == nil {
		return nil, schema.Errorf("Device '%s' not found", device)
	}
	if c.ring == nil {
		return nil, schema.Errorf("%s is not a ringbuf device", device)
	}
	return c.ring, nil
}

// The QOM classes of the chardevs blockd opens; only the socket has
// properties of its own.
func init() {
	reg := func(name, parent string, abstract bool, props ...objects.Property) {
		objects.RegisterClass(&objects.Class{Name: name, Parent: parent, Abstract: abstract, Props: props})
	}
	reg("chardev", "object", true)
	reg("chardev-fd", "chardev", true)
	for _, k := range []string{"null", "ringbuf", "socket", "udp", "pty", "parallel", "mux"} {
		if k == "socket" {
			reg("chardev-socket", "chardev", false,
				objects.Property{Name: "addr", Type: "SocketAddress", Get: func(inst any) any { return inst.(*Chardev).sock.address() }},
				objects.Property{Name: "connected", Type: "bool", Get: func(inst any) any { return inst.(*Chardev).sock.isConnected() }})
			continue
		}
		reg("chardev-"+k, "chardev", false)
	}
	for _, k := range []string{"file", "pipe", "stdio", "serial"} {
		reg("chardev-"+k, "chardev-fd", false)
	}
	reg("chardev-memory", "chardev-ringbuf", false)
}

// openLog opens a backend's logfile (ChardevCommon), as the reference
// does before the backend itself.
func openLog(cm Common) (*os.File, error) {
	if cm.Logfile == nil {
		return nil, nil
	}
	flags := os.O_WRONLY | os.O_CREATE
	if cm.Logappend != nil && *cm.Logappend {
		flags |= os.O_APPEND
	} else {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(*cm.Logfile, flags, 0o666)
	if err != nil {
		return nil, openError("create", *cm.Logfile, err)
	}
	return f, nil
}

// AddMonitorSocket registers the socket chardev of a command-line
// monitor, whose listener the daemon has bound (it keeps the monitor
// sockets' own rules for stale and live sockets) and serves.
func (r *Registry) AddMonitorSocket(id, path string) error {
	c := &Chardev{id: id, kind: "socket", frontend: true, busy: true}
	c.sock = &socketDev{c: c, listen: true, proto: "tcp", closed: true,
		given: schema.SocketAddress{Type: "unix", Unix: &schema.UnixSocketAddress{Path: path}}}
	c.sock.addr = c.sock.given
	// Whoever asks is connected through a monitor.
	c.filename = "unix:" + path + ",server=on"
	return r.register(c)
}

// ListenMonitor binds the listening inet socket chardev id of a
// command-line monitor, under its TLS when it has tls-creds, and
// registers it. The daemon serves the monitor on the listener returned;
// query-chardev shows the last client accepted, as the reference shows
// its one client.
func (r *Registry) ListenMonitor(id string, b *Backend) (net.Listener, error) {
	if b.Socket == nil {
		return nil, errors.New("not a socket chardev")
	}
	o := &b.Socket.Data
	if err := validateTLS(o); err != nil {
		return nil, err
	}
	shake, release, err := r.socketTLS(o, true)
	if err != nil {
		return nil, err
	}
	c := &Chardev{id: id, kind: "socket", frontend: true, busy: true}
	s := &socketDev{c: c, listen: true, proto: socketProto(o), closed: true, given: o.Addr.Flat()}
	s.addr = s.given
	c.sock = s
	ln, err := listenChardev(s.given)
	if err != nil {
		release()
		return nil, err
	}
	s.bound(ln)
	c.filename = s.disconnectedName()
	if err := r.register(c); err != nil {
		_ = ln.Close()
		release()
		return nil, err
	}
	return &monitorListener{Listener: ln, s: s, shake: shake, release: release}, nil
}

// monitorListener is an inet monitor chardev's listener: its connections
// run the chardev's TLS, and the chardev's filename follows them.
type monitorListener struct {
	net.Listener
	s       *socketDev
	shake   func(net.Conn) (net.Conn, error)
	release func()
	once    sync.Once
}

func (l *monitorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.c.setFilename(l.s.connectedName(c))
	if l.shake != nil {
		return newTLSConn(c, l.shake), nil
	}
	return c, nil
}

func (l *monitorListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(l.release)
	return err
}

// AddMonitorStdio registers the stdio chardev of a command-line monitor.
func (r *Registry) AddMonitorStdio(id string) error {
	return r.register(&Chardev{id: id, kind: "stdio", filename: "stdio", frontend: true, busy: true, stdio: true})
}

func (r *Registry) register(c *Chardev) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.devs[c.id]; dup {
		return schema.Errorf("Chardev with id '%s' already exists", c.id)
	}
	if err := r.objs.AddChild("chardevs", c.id, "chardev-"+c.kind, c); err != nil {
		return err
	}
	r.devs[c.id] = c
	return nil
}
