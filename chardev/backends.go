package chardev

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"blockd/internal/errtext"
	"blockd/schema"
)

// openError is the reference's text for a file it cannot open or create.
func openError(action, path string, err error) error {
	var e unix.Errno
	if errors.As(err, &e) {
		return fmt.Errorf("Could not %s '%s': %s", action, path, errtext.Strerror(e))
	}
	return fmt.Errorf("Could not %s '%s': %v", action, path, err)
}

// open opens the backend b as chardev id, in the reference's order: the
// logfile, then the backend itself.
func (r *Registry) open(id string, b *Backend) (*Chardev, *Return, error) {
	kind := string(b.Type)
	supported := false
	for _, k := range kinds {
		supported = supported || k == kind
	}
	if !supported {
		return nil, nil, fmt.Errorf("'%s' is not a valid char driver name", kind)
	}
	c := &Chardev{id: id, kind: kind, filename: kind}
	logf, err := openLog(b.common())
	if err != nil {
		return nil, nil, err
	}
	if logf != nil {
		c.files = append(c.files, logf)
	}
	ret, err := r.openBackend(c, b)
	if err != nil {
		c.close()
		return nil, nil, err
	}
	return c, ret, nil
}

func (r *Registry) openBackend(c *Chardev, b *Backend) (*Return, error) {
	switch c.kind {
	case "null":
	case "mux":
		// A mux is the user of its base chardev; with no devices to
		// multiplex for, it never lets go of it (nor can it be removed).
		name := b.Mux.Data.Chardev
		r.mu.Lock()
		defer r.mu.Unlock()
		base := r.devs[name]
		if base == nil {
			return nil, fmt.Errorf("mux: base chardev %s not found", name)
		}
		base.mu.Lock()
		defer base.mu.Unlock()
		if base.busy {
			return nil, fmt.Errorf("Device '%s' is in use", name)
		}
		base.busy = true
		c.busy = true
	case "ringbuf", "memory":
		size := int64(65536)
		if s := b.Ringbuf.Data.Size; s != nil {
			size = *s
		}
		if size&(size-1) != 0 {
			return nil, errors.New("size of ringbuf chardev must be power of two")
		}
		c.ring = newRing(size)
	case "file":
		f := b.File.Data
		flags := os.O_WRONLY | os.O_CREATE
		if f.Append != nil && *f.Append {
			flags |= os.O_APPEND
		} else {
			flags |= os.O_TRUNC
		}
		out, err := os.OpenFile(f.Out, flags, 0o666)
		if err != nil {
			return nil, openError("open", f.Out, err)
		}
		c.files = append(c.files, out)
		if f.In != nil {
			in, err := os.Open(*f.In)
			if err != nil {
				return nil, openError("open", *f.In, err)
			}
			c.files = append(c.files, in)
		}
	case "pipe":
		// PATH.in and PATH.out, or PATH for both ways.
		dev := b.Hostdev.Data.Device
		in, errIn := os.OpenFile(dev+".in", os.O_RDWR, 0)
		out, errOut := os.OpenFile(dev+".out", os.O_RDWR, 0) // a FIFO opened so does not wait for a peer
		if errIn == nil && errOut == nil {
			c.files = append(c.files, in, out)
			break
		}
		for _, f := range []*os.File{in, out} {
			if f != nil {
				_ = f.Close()
			}
		}
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return nil, openError("open", dev, err)
		}
		c.files = append(c.files, f)
	case "serial":
		dev := b.Hostdev.Data.Device
		f, err := os.OpenFile(dev, os.O_RDWR|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
		if err != nil {
			return nil, openError("open", dev, err)
		}
		c.files = append(c.files, f)
	case "parallel":
		dev := b.Hostdev.Data.Device
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return nil, openError("open", dev, err)
		}
		c.files = append(c.files, f)
		// PPCLAIM: only a parallel port can be claimed.
		if err := unix.IoctlSetInt(int(f.Fd()), 0x708b, 0); err != nil {
			var e unix.Errno
			errors.As(err, &e)
			return nil, fmt.Errorf("not a parallel port: %s", errtext.Strerror(e))
		}
	case "stdio":
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.daemonize {
			return nil, errors.New("cannot use stdio with -daemonize")
		}
		for _, o := range r.devs {
			if o.stdio {
				return nil, errors.New("cannot use stdio by multiple character devices")
			}
		}
		c.stdio = true
	case "pty":
		master, name, err := openPty()
		if err != nil {
			return nil, err
		}
		c.files = append(c.files, master)
		c.filename = "pty:" + name
		r.log.Info("char device redirected to " + name + " (label " + c.id + ")")
		return &Return{Pty: &name}, nil
	case "udp":
		conn, err := openUDP(&b.UDP.Data)
		if err != nil {
			return nil, err
		}
		c.files = append(c.files, conn)
	case "socket":
		s, err := r.openSocket(c, &b.Socket.Data)
		if err != nil {
			return nil, err
		}
		c.sock = s
	}
	return &Return{}, nil
}

// openPty opens a pseudo-terminal pair's master side and names its
// slave, which a client opens (chardev-add returns the name).
func openPty() (*os.File, string, error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("Failed to create PTY: %s", errtext.Strerror(err.(unix.Errno)))
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		_ = unix.Close(fd)
		return nil, "", fmt.Errorf("Failed to create PTY: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		_ = unix.Close(fd)
		return nil, "", fmt.Errorf("Failed to create PTY: %v", err)
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), "/dev/pts/" + strconv.Itoa(n), nil
}

func openUDP(u *UDP) (io.Closer, error) {
	remote := u.Remote.Flat()
	if remote.Inet == nil {
		return nil, errors.New("Only inet address is supported for udp")
	}
	var laddr *net.UDPAddr
	if u.Local != nil {
		l := u.Local.Flat()
		if l.Inet == nil {
			return nil, errors.New("Only inet address is supported for udp")
		}
		a, err := net.ResolveUDPAddr("udp", net.JoinHostPort(l.Inet.Host, l.Inet.Port))
		if err != nil {
			return nil, fmt.Errorf("Failed to bind socket: %v", err)
		}
		laddr = a
	}
	raddr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(remote.Inet.Host, remote.Inet.Port))
	if err != nil {
		return nil, fmt.Errorf("address resolution failed for %s:%s: %v", remote.Inet.Host, remote.Inet.Port, err)
	}
	conn, err := net.DialUDP("udp", laddr, raddr)
	if err != nil {
		return nil, fmt.Errorf("Failed to connect socket: %v", err)
	}
	return conn, nil
}

// ring is the ringbuf and memory backends' buffer: writes past its size
// drop the oldest bytes; counters as the reference's (prod and cons
// never wrap within a run).
type ring struct {
	mu         sync.Mutex
	buf        []byte
	prod, cons int64
}

func newRing(size int64) *ring { return &ring{buf: make([]byte, size)} }

func (r *ring) write(p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	size := int64(len(r.buf))
	if size == 0 {
		// The reference accepts size 0 and then writes outside its
		// buffer; blockd keeps nothing.
		return
	}
	for _, b := range p {
		r.buf[r.prod&(size-1)] = b
		r.prod++
		if r.prod-r.cons > size {
			r.cons = r.prod - size
		}
	}
}

func (r *ring) read(n int64) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	size := int64(len(r.buf))
	n = min(n, r.prod-r.cons)
	out := make([]byte, 0, max(n, 0))
	for ; n > 0; n-- {
		out = append(out, r.buf[r.cons&(size-1)])
		r.cons++
	}
	return out
}

// socketDev is a socket chardev: a server that takes one client at a
// time, or a client, optionally reconnecting. With no user, what the
// peer sends is read and dropped, so that it is never blocked.
type socketDev struct {
	c      *Chardev
	listen bool
	proto  string // "tcp", "telnet", "websocket" or "tn3270" for inet
	given  schema.SocketAddress

	mu        sync.Mutex
	addr      schema.SocketAddress // what qom-get addr reports
	ln        net.Listener
	conn      net.Conn
	connected bool
	closed    bool
	stopped   chan struct{} // closed when the accept loop has ended
	quit      chan struct{}

	// tlsShake runs TLS on each connection (nil without tls-creds);
	// releaseTLS lets go of the credentials' session state at close.
	tlsShake   func(net.Conn) (net.Conn, error)
	releaseTLS func()
}

// socketProto is the protocol an inet socket chardev's filename shows.
func socketProto(o *Socket) string {
	switch {
	case o.Telnet != nil && *o.Telnet:
		return "telnet"
	case o.Tn3270 != nil && *o.Tn3270:
		return "tn3270"
	case o.Websocket != nil && *o.Websocket:
		return "websocket"
	}
	return "tcp"
}

// bound records the listener of a server socket and, for inet, the
// address it is bound to: the reference reports the port it got.
func (s *socketDev) bound(ln net.Listener) {
	s.ln = ln
	if ta, ok := ln.Addr().(*net.TCPAddr); ok {
		in := schema.InetSocketAddress{Host: ta.IP.String(), Port: strconv.Itoa(ta.Port)}
		t := true
		if ta.IP.To4() != nil {
			in.Ipv4 = &t
		} else {
			in.Ipv6 = &t
		}
		s.addr = schema.SocketAddress{Type: "inet", Inet: &in}
	}
}

// dial connects a client socket, under TLS when the chardev has it (the
// handshake runs when the connection is first used).
func (s *socketDev) dial() (net.Conn, error) {
	conn, err := dialChardev(s.given)
	if err != nil || s.tlsShake == nil {
		return conn, err
	}
	return newTLSConn(conn, s.tlsShake), nil
}

func (s *socketDev) address() any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

func (s *socketDev) isConnected() any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected
}

// disconnectedName is qemu_chr_socket_address with the "disconnected:"
// prefix.
func (s *socketDev) disconnectedName() string {
	srv := ""
	if s.listen {
		srv = ",server=on"
	}
	a := s.addr
	switch {
	case a.Inet != nil:
		return fmt.Sprintf("disconnected:%s:%s:%s%s", s.proto, a.Inet.Host, a.Inet.Port, srv)
	case a.Unix != nil:
		telnet := ""
		if s.proto == "telnet" {
			telnet = "telnet:"
		}
		return fmt.Sprintf("disconnected:%sunix:%s%s", telnet, a.Unix.Path, srv)
	}
	return "disconnected:" + string(a.Type)
}

// connectedName is qemu_chr_compute_filename.
func (s *socketDev) connectedName(conn net.Conn) string {
	srv := ""
	if s.listen {
		srv = ",server=on"
	}
	switch la := conn.LocalAddr().(type) {
	case *net.UnixAddr:
		return "unix:" + la.Name + srv
	case *net.TCPAddr:
		ra, _ := conn.RemoteAddr().(*net.TCPAddr)
		return fmt.Sprintf("%s:%s%s <-> %s", s.proto, net.JoinHostPort(la.IP.String(), strconv.Itoa(la.Port)), srv,
			net.JoinHostPort(ra.IP.String(), strconv.Itoa(ra.Port)))
	}
	return "unknown"
}

func (r *Registry) openSocket(c *Chardev, o *Socket) (*socketDev, error) {
	s := &socketDev{c: c, listen: o.Server == nil || *o.Server, proto: socketProto(o), given: o.Addr.Flat(),
		quit: make(chan struct{}), stopped: make(chan struct{})}
	if err := validateTLS(o); err != nil {
		return nil, err
	}
	wait := o.Wait != nil && *o.Wait
	reconnect := o.Reconnect != nil && *o.Reconnect > 0
	switch {
	case !s.listen && wait:
		return nil, errors.New("'wait' option is incompatible with socket in client connect mode")
	case s.listen && reconnect:
		return nil, errors.New("'reconnect' option is incompatible with 'wait' and 'server' options")
	case s.listen && s.proto == "websocket" && s.given.Type != "inet" && s.given.Type != "unix":
		return nil, errors.New("'websocket' option is only valid for inet and unix sockets")
	}
	if s.given.Type == "vsock" || s.given.Type == "fd" {
		return nil, fmt.Errorf("socket address type '%s' is not supported", s.given.Type)
	}
	tlsShake, releaseTLS, err := r.socketTLS(o, s.listen)
	if err != nil {
		return nil, err
	}
	s.tlsShake, s.releaseTLS = tlsShake, releaseTLS
	s.addr = s.given
	if s.listen {
		ln, err := listenChardev(s.given)
		if err != nil {
			releaseTLS()
			return nil, err
		}
		s.bound(ln)
		c.filename = s.disconnectedName()
		if wait {
			conn, err := r.waitClient(ln, c.filename)
			if err != nil {
				_ = ln.Close()
				return nil, err
			}
			s.attach(conn)
		}
		go s.acceptLoop()
		return s, nil
	}
	c.filename = s.disconnectedName()
	conn, err := s.dial()
	if err != nil {
		if !reconnect {
			releaseTLS()
			return nil, err
		}
		go s.reconnectLoop(time.Duration(*o.Reconnect) * time.Second)
		return s, nil
	}
	s.attach(conn)
	go func() { s.drain(conn); close(s.stopped) }()
	return s, nil
}

// waitClient is a server socket's wait for its first client. Unlike the
// reference, which cannot be stopped meanwhile, blockd's shutdown (a
// signal) ends the wait.
func (r *Registry) waitClient(ln net.Listener, name string) (net.Conn, error) {
	r.log.Info("waiting for connection on: " + name)
	type accepted struct {
		conn net.Conn
		err  error
	}
	ch := make(chan accepted, 1)
	go func() {
		conn, err := ln.Accept()
		ch <- accepted{conn, err}
	}()
	select {
	case a := <-ch:
		return a.conn, a.err
	case <-r.quit:
		_ = ln.Close()
		if a := <-ch; a.conn != nil {
			_ = a.conn.Close()
		}
		return nil, errors.New("shutting down while waiting for a client")
	}
}

func listenChardev(a schema.SocketAddress) (net.Listener, error) {
	switch {
	case a.Unix != nil:
		// The reference replaces whatever is at the path.
		if fi, err := os.Lstat(a.Unix.Path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(a.Unix.Path)
		}
		ln, err := ListenUnix(a.Unix.Path, listenBacklog)
		if err != nil {
			var e unix.Errno
			errors.As(err, &e)
			return nil, fmt.Errorf("Failed to bind socket to %s: %s", a.Unix.Path, errtext.Strerror(e))
		}
		return ln, nil
	case a.Inet != nil:
		ln, err := net.Listen("tcp", net.JoinHostPort(a.Inet.Host, a.Inet.Port))
		if err != nil {
			return nil, fmt.Errorf("Failed to bind socket: %s", sysText(err))
		}
		return ln, nil
	}
	return nil, errors.New("unsupported socket address")
}

func dialChardev(a schema.SocketAddress) (net.Conn, error) {
	switch {
	case a.Unix != nil:
		conn, err := net.Dial("unix", a.Unix.Path)
		if err != nil {
			return nil, fmt.Errorf("Failed to connect to '%s': %s", a.Unix.Path, sysText(err))
		}
		return conn, nil
	case a.Inet != nil:
		conn, err := net.Dial("tcp", net.JoinHostPort(a.Inet.Host, a.Inet.Port))
		if err != nil {
			return nil, fmt.Errorf("Failed to connect to '%s:%s': %s", a.Inet.Host, a.Inet.Port, sysText(err))
		}
		return conn, nil
	}
	return nil, errors.New("unsupported socket address")
}

// sysText is strerror of the errno under a network error.
func sysText(err error) string {
	var e unix.Errno
	if errors.As(err, &e) {
		return errtext.Strerror(e)
	}
	return err.Error()
}

func (s *socketDev) attach(conn net.Conn) {
	s.mu.Lock()
	s.conn, s.connected = conn, true
	s.mu.Unlock()
	s.c.setFilename(s.connectedName(conn))
}

// drain reads and drops what the peer sends until it hangs up.
func (s *socketDev) drain(conn net.Conn) {
	_, _ = io.Copy(io.Discard, conn)
	_ = conn.Close()
	s.mu.Lock()
	if s.conn == conn {
		s.conn, s.connected = nil, false
	}
	s.mu.Unlock()
	s.c.setFilename(s.disconnectedName())
}

// acceptLoop serves one client at a time until the chardev closes.
func (s *socketDev) acceptLoop() {
	defer close(s.stopped)
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	for {
		if conn != nil {
			s.drain(conn)
		}
		select {
		case <-s.quit:
			return
		default:
		}
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		if s.tlsShake != nil {
			c = newTLSConn(c, s.tlsShake)
		}
		select {
		case <-s.quit:
			_ = c.Close()
			return
		default:
		}
		s.attach(c)
		conn = c
	}
}

func (s *socketDev) reconnectLoop(every time.Duration) {
	defer close(s.stopped)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		conn, err := s.dial()
		if err != nil {
			continue
		}
		s.attach(conn)
		s.drain(conn)
	}
}

func (s *socketDev) close() {
	if s.stopped == nil { // a monitor's: the daemon closes its listener
		return
	}
	s.mu.Lock()
	first := !s.closed
	s.closed = true
	if first {
		close(s.quit)
	}
	conn := s.conn
	s.mu.Unlock()
	if s.ln != nil {
		_ = s.ln.Close()
	}
	if conn != nil {
		_ = conn.Close()
	}
	if first {
		<-s.stopped
		if s.releaseTLS != nil {
			s.releaseTLS()
		}
	}
}
