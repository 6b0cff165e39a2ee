package file

import "sync"

// serializer orders overlapping writes under O_DIRECT, like QEMU's
// serialising tracked requests: a read-modify-write cycle (exclusive)
// waits for every overlapping request and blocks new ones; other
// requests only wait for exclusive ones. Ranges are in bytes, padded to
// the request alignment by the caller.
type serializer struct {
	mu   sync.Mutex
	cond *sync.Cond
	reqs []*serialReq
}

type serialReq struct {
	start, end int64
	excl       bool
}

func (s *serializer) begin(start, end int64, excl bool) *serialReq {
	r := &serialReq{start: start, end: end, excl: excl}
	s.mu.Lock()
	if s.cond == nil {
		s.cond = sync.NewCond(&s.mu)
	}
	for s.conflicts(r) {
		s.cond.Wait()
	}
	s.reqs = append(s.reqs, r)
	s.mu.Unlock()
	return r
}

func (s *serializer) conflicts(r *serialReq) bool {
	for _, o := range s.reqs {
		if (r.excl || o.excl) && r.start < o.end && o.start < r.end {
			return true
		}
	}
	return false
}

func (s *serializer) end(r *serialReq) {
	if r == nil {
		return
	}
	s.mu.Lock()
	for i, o := range s.reqs {
		if o == r {
			last := len(s.reqs) - 1
			s.reqs[i] = s.reqs[last]
			s.reqs[last] = nil
			s.reqs = s.reqs[:last]
			break
		}
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}
