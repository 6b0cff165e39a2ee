package chardev

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Unix sockets are listened on in one place, for the monitors' sockets
// and socket chardevs alike.

// ListenBacklog bounds the connections the kernel queues before
// blockd accepts them. Go's default (somaxconn, 4096) lets a storm of
// clients that connect and close at once put thousands of dead
// connections ahead of a real client; the reference listens with a
// backlog of 1. A client that finds the queue full waits in connect(2)
// (blocking) or gets EAGAIN (non-blocking) and tries again.
const ListenBacklog = 32

const listenBacklog = ListenBacklog

// ListenUnix is net.Listen("unix", path) with a chosen backlog and a
// 0600 socket file, removed again when the listener closes.
func ListenUnix(path string, backlog int) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	old := unix.Umask(0o177)
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: path})
	unix.Umask(old)
	if err == nil {
		err = unix.Listen(fd, backlog)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if err != nil {
		return nil, err
	}
	l, err := net.FileListener(f)
	if err != nil {
		_ = os.Remove(path)
		return nil, err
	}
	l.(*net.UnixListener).SetUnlinkOnClose(true)
	return l, nil
}
