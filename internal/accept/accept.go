// Package accept owns the listening side shared by blockd's protocol
// servers (QMP, JSON-RPC): the set of listeners, the accept loop, and
// closing them all at shutdown.
package accept

import (
	"errors"
	"net"
	"sync"
)

// Listeners is a set of listening sockets served until Close.
type Listeners struct {
	mu      sync.Mutex
	closing bool
	ls      []net.Listener
}

// Serve accepts connections on l and hands each to handle, until Close
// (then it returns nil) or an accept error.
func (s *Listeners) Serve(l net.Listener, handle func(net.Conn)) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.ls = append(s.ls, l)
	s.mu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		handle(c)
	}
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
