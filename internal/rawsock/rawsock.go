// Package rawsock owns listening stream sockets that Go's net package
// cannot wrap (AF_VSOCK, whether opened here or passed in as a
// descriptor), as a net.Listener whose connections are net.Conns. Both
// run on Go's poller through os.File, so deadlines, Close and
// syscall.Conn (used by TLS) behave as with net's own sockets.
package rawsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// VsockAddr is an AF_VSOCK address.
type VsockAddr struct {
	CID  uint32
	Port uint32
}

func (a *VsockAddr) Network() string { return "vsock" }
func (a *VsockAddr) String() string  { return fmt.Sprintf("vsock:%d:%d", a.CID, a.Port) }

// ListenVsock opens a listening AF_VSOCK stream socket. Errors say which
// step failed, with the system's reason.
func ListenVsock(cid, port uint32, backlog int) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, &os.SyscallError{Syscall: "socket", Err: err}
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: cid, Port: port}); err != nil {
		unix.Close(fd)
		return nil, &os.SyscallError{Syscall: "bind", Err: err}
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return nil, &os.SyscallError{Syscall: "listen", Err: err}
	}
	return FileListener(fd)
}

// DialVsock connects an AF_VSOCK stream socket to cid:port. The connect
// runs on Go's poller (a non-blocking connect, then SO_ERROR once the
// socket is writable), so no thread waits in the kernel meanwhile. Errors
// name the failing step, with the system's reason.
func DialVsock(cid, port uint32) (net.Conn, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, &os.SyscallError{Syscall: "socket", Err: err}
	}
	f := os.NewFile(uintptr(fd), "socket")
	raddr := &VsockAddr{CID: cid, Port: port}
	err = unix.Connect(fd, &unix.SockaddrVM{CID: cid, Port: port})
	for err == unix.EINTR {
		err = unix.Connect(fd, &unix.SockaddrVM{CID: cid, Port: port})
	}
	if err == unix.EINPROGRESS {
		err = waitConnected(f)
	}
	if err != nil {
		f.Close()
		return nil, &os.SyscallError{Syscall: "connect", Err: err}
	}
	var laddr net.Addr = &VsockAddr{}
	if sa, err := unix.Getsockname(fd); err == nil {
		laddr = toAddr(sa)
	}
	return &conn{File: f, laddr: laddr, raddr: raddr}, nil
}

// waitConnected waits for a non-blocking connect on f to finish and
// returns its outcome. The first call of the callback only asks the
// poller to wait for writability, which a finished connect (either way)
// brings.
func waitConnected(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	waited := false
	var soErr error
	if err := rc.Write(func(fd uintptr) bool {
		if !waited {
			waited = true
			return false
		}
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			soErr = err
		case v != 0:
			soErr = unix.Errno(v)
		}
		return true
	}); err != nil {
		return err
	}
	return soErr
}

// FileListener takes over fd, a listening stream socket of any family:
// from here on the listener owns (and closes) it. Unix and inet sockets
// get net's own listener; others (vsock) this package's.
func FileListener(fd int) (net.Listener, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, err
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "socket")
	if l, err := net.FileListener(f); err == nil {
		f.Close() // net holds its own duplicate
		return l, nil
	}
	return newListener(f)
}

// newListener serves the non-blocking listening socket f itself.
func newListener(f *os.File) (*listener, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	var sa unix.Sockaddr
	if cerr := rc.Control(func(fd uintptr) { sa, err = unix.Getsockname(int(fd)) }); cerr != nil {
		err = cerr
	}
	if err != nil {
		f.Close()
		return nil, &os.SyscallError{Syscall: "getsockname", Err: err}
	}
	return &listener{f: f, rc: rc, addr: toAddr(sa)}, nil
}

type listener struct {
	f      *os.File
	rc     syscall.RawConn
	addr   net.Addr
	closed atomic.Bool // RawConn reports a closed file in poll's words
}

func (l *listener) Accept() (net.Conn, error) {
	var nfd int
	var sa unix.Sockaddr
	var aerr error
	err := l.rc.Read(func(fd uintptr) bool {
		for {
			nfd, sa, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			if aerr != unix.EINTR {
				return aerr != unix.EAGAIN
			}
		}
	})
	if err != nil {
		if l.closed.Load() {
			return nil, net.ErrClosed
		}
		return nil, err
	}
	if aerr != nil {
		return nil, &net.OpError{Op: "accept", Net: l.addr.Network(), Addr: l.addr, Err: os.NewSyscallError("accept4", aerr)}
	}
	return &conn{File: os.NewFile(uintptr(nfd), "socket"), laddr: l.addr, raddr: toAddr(sa)}, nil
}

func (l *listener) Close() error {
	l.closed.Store(true)
	return netErr(l.f.Close())
}

func (l *listener) Addr() net.Addr { return l.addr }

// conn is an accepted connection; *os.File gives Read, Write, deadlines
// and SyscallConn.
type conn struct {
	*os.File
	laddr, raddr net.Addr
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.File.Read(p)
	return n, netErr(err)
}

func (c *conn) Write(p []byte) (int, error) {
	n, err := c.File.Write(p)
	return n, netErr(err)
}

func (c *conn) Close() error         { return netErr(c.File.Close()) }
func (c *conn) LocalAddr() net.Addr  { return c.laddr }
func (c *conn) RemoteAddr() net.Addr { return c.raddr }

// netErr reports a closed file as net.ErrClosed, as callers of a
// net.Conn or net.Listener expect.
func netErr(err error) error {
	if errors.Is(err, os.ErrClosed) {
		return net.ErrClosed
	}
	return err
}

func toAddr(sa unix.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *unix.SockaddrVM:
		return &VsockAddr{CID: a.CID, Port: a.Port}
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: a.Name, Net: "unix"}
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: a.Addr[:], Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: a.Addr[:], Port: a.Port}
	}
	return &net.UnixAddr{Net: "unknown"}
}
