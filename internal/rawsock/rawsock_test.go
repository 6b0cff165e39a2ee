package rawsock

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// unixListenFD returns a listening Unix socket's descriptor at path.
func unixListenFD(t *testing.T, path string) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 8); err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestOwnListener drives this package's listener and connections on a
// Unix socket (the kind of socket does not matter to them): accept, both
// directions, EOF, a read deadline, and Close ending a blocked Accept
// and Read with net.ErrClosed.
func TestOwnListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	fd := unixListenFD(t, path)
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	l, err := newListener(os.NewFile(uintptr(fd), "l"))
	if err != nil {
		t.Fatal(err)
	}
	if a := l.Addr().String(); a != path {
		t.Fatalf("listener address %q", a)
	}
	cc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sc.(syscall.Conn); !ok {
		t.Fatal("accepted connection is not a syscall.Conn (TLS needs its descriptor)")
	}
	if _, err := cc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("server read %q, %v", buf, err)
	}
	if _, err := sc.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(cc, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q, %v", buf, err)
	}
	_ = sc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := sc.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	_ = sc.SetReadDeadline(time.Time{})
	cc.Close()
	if _, err := sc.Read(buf); err != io.EOF {
		t.Fatalf("read after the peer closed: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := sc.Read(buf)
		done <- err
	}()
	sc.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) && err != io.EOF {
		t.Fatalf("read on a closed conn: %v", err)
	}

	go func() {
		_, err := l.Accept()
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	l.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept on a closed listener: %v", err)
	}
}

// TestFileListenerUnix: a Unix socket passed as a descriptor gets net's
// own listener, and the descriptor is taken over.
func TestFileListenerUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	fd := unixListenFD(t, path)
	l, err := FileListener(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, ok := l.(*net.UnixListener); !ok {
		t.Fatalf("listener %T", l)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Fatalf("the passed descriptor is still open: %v", err)
	}
	go func() {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestVsock listens on VMADDR_CID_ANY where the kernel has AF_VSOCK: a
// second listener on the same port is refused (the first holds it).
// Connecting needs a vsock loopback transport or a peer VM, which this
// test cannot assume.
func TestVsock(t *testing.T) {
	l, err := ListenVsock(unix.VMADDR_CID_ANY, unix.VMADDR_PORT_ANY, 4)
	if err != nil {
		if errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.ENODEV) {
			t.Skipf("SKIP: no AF_VSOCK here: %v", err)
		}
		t.Fatal(err)
	}
	a, ok := l.Addr().(*VsockAddr)
	if !ok || a.Port == unix.VMADDR_PORT_ANY {
		t.Fatalf("address %v", l.Addr())
	}
	if _, err := ListenVsock(unix.VMADDR_CID_ANY, a.Port, 4); !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("second listener on port %d: %v", a.Port, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	l.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept after close: %v", err)
	}
	if l2, err := ListenVsock(unix.VMADDR_CID_ANY, a.Port, 4); err != nil {
		t.Fatalf("port %d not released by Close: %v", a.Port, err)
	} else {
		l2.Close()
	}
}
