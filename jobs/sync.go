package jobs

import (
	"blockd/blockio"
)

// syncLoop is what active commit and mirror share once their initial
// dirty ranges are marked: copy dirty granules until none are left,
// announce READY, then keep the target in step with every new write
// until completion or cancellation (mirror_run's main loop).
type syncLoop struct {
	src, dst blockio.Device
	dirty    *dirtyMap
	// locks, in write-blocking mode, keeps the background copy of a range
	// and a guest write to it (which goes to the target too) apart.
	locks *rangeLock
}

func (l *syncLoop) newCopier(j *Job) *copier {
	cp := newCopier(j, l.src, l.dst)
	cp.locks = l.locks
	return cp
}

func (l *syncLoop) run(j *Job, size int64) error {
	cp := l.newCopier(j)
	announced := false
	var pos int64
	for {
		if err := j.Checkpoint(); err != nil {
			if cerr := cp.wait(); cerr != nil {
				return cerr
			}
			if announced && !j.m.hardCancelled(j) {
				return nil // cancelled after READY: ends without the switch
			}
			return err
		}
		j.SetTotal(j.Current() + l.dirty.bytes())
		off, n, ok := l.dirty.take(pos, chunkSize)
		if ok {
			n = min(n, size-off)
			pos = off + n
			// A granule larger than a chunk is copied chunk by chunk.
			for o := off; o < off+n; o += chunkSize {
				l := min(int64(chunkSize), off+n-o)
				cp.start(o, l)
				// An error is a cancel, which the checkpoint above
				// handles; what was taken is still started.
				_ = j.Limit(l)
			}
			continue
		}
		if err := cp.wait(); err != nil {
			goOn, from := j.onError(err, pos)
			if !goOn {
				return err
			}
			if from != pos {
				l.dirty.mark(from, chunkSize) // stop: copy it again after resume
			}
		}
		cp = l.newCopier(j)
		j.SetTotal(j.Current() + l.dirty.bytes())
		if l.dirty.bytes() > 0 {
			continue
		}
		if !announced {
			if err := l.dst.Flush(); err != nil {
				return err
			}
			announced = true
			j.Ready()
		}
		if j.ShouldComplete() {
			return l.dst.Flush()
		}
		j.Wait(l.dirty.notify)
	}
}

// finalCopy copies what is still dirty while the source is drained (the
// owner reaches its driver directly), then makes the target durable: the
// last step before the target takes the source's place.
func finalCopy(j *Job, src, dst blockio.Device, dirty *dirtyMap) error {
	buf := make([]byte, chunkSize)
	size, err := src.Size()
	if err != nil {
		return err
	}
	for {
		off, n, ok := dirty.take(0, chunkSize)
		if !ok {
			break
		}
		n = min(n, size-off)
		if n <= 0 {
			continue
		}
		for o := off; o < off+n; o += chunkSize {
			l := min(int64(chunkSize), off+n-o)
			if err := src.ReadAt(buf[:l], o); err != nil {
				return err
			}
			if err := dst.WriteAt(buf[:l], o, 0); err != nil {
				return err
			}
			j.Progress(l)
		}
	}
	return dst.Flush()
}
