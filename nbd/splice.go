package nbd

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxSpliced is the largest READ sent from a file's pages: a pipe holds
// a reply's pages, and pipes grow to 1 MiB without CAP_SYS_RESOURCE
// (fs.pipe-max-size); larger reads are copied.
const maxSpliced = 1 << 20

// pipe is a kernel pipe that holds a reply's file pages by reference
// between the device lending them and the socket taking them (splice in,
// splice out: no copy through user memory).
type pipe struct {
	r, w int
	size int // capacity in bytes
	held int // bytes in the pipe
}

func newPipe() (*pipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	size, err := unix.FcntlInt(uintptr(fds[1]), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		size = 0
	}
	return &pipe{r: fds[0], w: fds[1], size: size}, nil
}

// grow makes room for n bytes of a file from off: a page slot for each
// page they touch.
func (p *pipe) grow(off int64, n int) bool {
	pg := os.Getpagesize()
	want := (int(off%int64(pg)) + n + pg - 1) / pg * pg
	if want <= p.size {
		return true
	}
	size, err := unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, want)
	if err != nil {
		return false
	}
	p.size = size
	return size >= want
}

// fill splices n bytes of fd from off into the pipe; fewer at the end of
// the file.
func (p *pipe) fill(fd int, off int64, n int) (int, error) {
	if !p.grow(off, n) {
		return 0, errPipeSize
	}
	k := 0
	for k < n {
		m, err := unix.Splice(fd, &off, p.w, nil, n-k, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return k, os.NewSyscallError("splice", err)
		}
		if m == 0 {
			break
		}
		k += int(m)
		p.held += int(m)
	}
	return k, nil
}

// drainTo splices what the pipe holds into the socket, waiting for the
// socket as a write does.
func (p *pipe) drainTo(sock syscall.Conn) error {
	rc, err := sock.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Write(func(s uintptr) bool {
		for p.held > 0 {
			m, e := unix.Splice(p.r, nil, int(s), nil, p.held, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			if e == unix.EINTR {
				continue
			}
			if e == unix.EAGAIN {
				return false
			}
			if e != nil {
				serr = os.NewSyscallError("splice", e)
				return true
			}
			p.held -= int(m)
		}
		return true
	})
	if serr != nil {
		return serr
	}
	return err
}

// maxPipes bounds the pipes one server has open (two descriptors each):
// past it reads are copied, so that clients cannot spend the daemon's
// descriptors, which it needs for images and connections, on pipes.
const maxPipes = 128

// pipePool keeps a connection's pipes between reads; at most one per
// request in flight exists. Closed when the connection's requests end.
type pipePool struct {
	mu   sync.Mutex
	free []*pipe
	open *atomic.Int32 // pipes open in the whole server
}

// errPipeSize: the pipe cannot grow to hold a read; it is copied.
var errPipeSize = errors.New("nbd: pipe too small")

// get returns an empty pipe, or nil when none can be had.
func (pp *pipePool) get() *pipe {
	pp.mu.Lock()
	var p *pipe
	if k := len(pp.free); k > 0 {
		p, pp.free = pp.free[k-1], pp.free[:k-1]
	}
	pp.mu.Unlock()
	if p != nil {
		return p
	}
	if pp.open.Add(1) > maxPipes {
		pp.open.Add(-1)
		return nil
	}
	p, err := newPipe()
	if err != nil {
		pp.open.Add(-1)
		return nil
	}
	return p
}

// put takes a pipe back; one that still holds pages (a request that
// failed half way) is closed instead.
func (pp *pipePool) put(p *pipe) {
	if p.held != 0 {
		pp.discard(p)
		return
	}
	pp.mu.Lock()
	pp.free = append(pp.free, p)
	pp.mu.Unlock()
}

func (pp *pipePool) discard(p *pipe) {
	_ = unix.Close(p.r)
	_ = unix.Close(p.w)
	pp.open.Add(-1)
}

func (pp *pipePool) close() {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	for _, p := range pp.free {
		pp.discard(p)
	}
	pp.free = nil
}
