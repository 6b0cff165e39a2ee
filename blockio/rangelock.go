package blockio

import "sync"

// RangeLock excludes overlapping byte ranges from each other (QEMU's
// serialising requests): a job's copy of a range and a guest write to it
// through the job's filter, or a copy-on-read and a write through the
// copy-on-read filter, never run at once.
type RangeLock struct {
	mu   sync.Mutex
	cond *sync.Cond
	held []lockedRange
}

type lockedRange struct{ off, end int64 }

// NewRangeLock returns a lock with no range held.
func NewRangeLock() *RangeLock {
	l := &RangeLock{}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// Lock waits until no held range overlaps [off, off+n), takes it and
// returns its release.
func (l *RangeLock) Lock(off, n int64) (unlock func()) {
	r := lockedRange{off, off + n}
	l.mu.Lock()
	for l.overlaps(r) {
		l.cond.Wait()
	}
	l.held = append(l.held, r)
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		for i, x := range l.held {
			if x == r {
				l.held = append(l.held[:i], l.held[i+1:]...)
				break
			}
		}
		l.mu.Unlock()
		l.cond.Broadcast()
	}
}

func (l *RangeLock) overlaps(r lockedRange) bool {
	for _, x := range l.held {
		if x.off < r.end && r.off < x.end {
			return true
		}
	}
	return false
}
