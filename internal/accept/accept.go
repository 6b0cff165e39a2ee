// Package accept owns the listening side shared by blockd's protocol
// servers (QMP, JSON-RPC): the set of listeners, the accept loop with its
// back-off on temporary errors, and closing them all at shutdown.
package accept

import (
	"errors"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Listeners is a set of listening sockets served until Close.
type Listeners struct {
	mu      sync.Mutex
	closing bool
	ls      []net.Listener
}

// Back-off bounds after a temporary accept error, as net/http's server.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// Serve accepts connections on l and hands each to handle, until Close
// (then it returns nil) or a permanent accept error. Running out of file
// descriptors or memory is temporary: the loop waits (5 ms doubling up to
// 1 s) and tries again, so the listener serves again once clients leave.
func (s *Listeners) Serve(l net.Listener, handle func(net.Conn), log *zap.Logger) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.ls = append(s.ls, l)
	s.mu.Unlock()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if Temporary(err) {
				if backoff == 0 {
					backoff = minBackoff
				} else {
					backoff = min(2*backoff, maxBackoff)
				}
				log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("backoff", backoff))
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		handle(c)
	}
}

// Temporary reports whether an accept error goes away by itself: no file
// descriptor, buffer or memory left for now, or a peer that gave up
// before its connection was accepted.
func Temporary(err error) bool {
	for _, e := range []error{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.ECONNABORTED, unix.EINTR, unix.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Close closes every listener; Serve calls still to come return at once.
func (s *Listeners) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	for _, l := range s.ls {
		_ = l.Close()
	}
}
