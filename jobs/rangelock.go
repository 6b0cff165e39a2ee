package jobs

import "sync"

// rangeLock excludes overlapping byte ranges from each other: a job's
// copy of a range and a guest write to it through the job's filter never
// run at once (QEMU's serialising requests).
type rangeLock struct {
	mu   sync.Mutex
	cond *sync.Cond
	held []lockedRange
}

type lockedRange struct{ off, end int64 }

func newRangeLock() *rangeLock {
	l := &rangeLock{}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// lock waits until no held range overlaps [off, off+n), takes it and
// returns its release.
func (l *rangeLock) lock(off, n int64) (unlock func()) {
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

func (l *rangeLock) overlaps(r lockedRange) bool {
	for _, x := range l.held {
		if x.off < r.end && r.off < x.end {
			return true
		}
	}
	return false
}
