package jobs

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// ErrCancelled is what a worker returns when the job was cancelled.
var ErrCancelled = errors.New("Operation canceled")

// control is the part of a job its worker goroutine sees: pause, cancel,
// complete and speed requests from the owner, progress back to it. The
// worker never waits for the owner, so the owner may wait for the worker.
type control struct {
	mu                sync.Mutex
	paused            bool
	cancelled         bool
	completeRequested bool
	hard              bool // the cancel is reported as a cancel
	speed             int64
	wake              chan struct{} // a nudge: something above changed

	// idle: the worker is asleep on the speed limit or parked by a pause.
	// It is set and cleared under mu together with the check of
	// cancelled, so a cancel that sees it knows the worker will return
	// without starting more I/O.
	idle bool

	current, total atomic.Int64
	busy           atomic.Bool

	// rate limiting: when the next chunk may start.
	nextSlot time.Time
}

func newControl(speed int64) *control {
	return &control{speed: speed, wake: make(chan struct{}, 1)}
}

// cancel marks the job cancelled (hard: reported as a cancel), lifts a
// pause, wakes the worker, and reports whether it was idle: then it is
// about to return ErrCancelled without starting more I/O.
func (c *control) cancel(hard bool) (idle bool) {
	c.mu.Lock()
	c.cancelled, c.hard, c.paused = true, hard, false
	idle = c.idle
	c.mu.Unlock()
	c.nudge()
	return idle
}

func (c *control) nudge() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// checkpoint blocks while the job is paused and reports cancellation.
// Workers call it between requests, which is where a pause takes effect.
func (c *control) checkpoint() error {
	for {
		c.mu.Lock()
		if c.cancelled {
			c.idle = false
			c.mu.Unlock()
			return ErrCancelled
		}
		if !c.paused {
			c.idle = false
			c.mu.Unlock()
			c.busy.Store(true)
			return nil
		}
		c.idle = true
		c.mu.Unlock()
		c.busy.Store(false)
		<-c.wake
	}
}

// limit accounts n bytes just copied against the speed limit and sleeps
// until the limit allows more, waking early for cancel or a new speed. A
// job of len bytes at speed s therefore takes at least len/s.
func (c *control) limit(n int64) error {
	c.mu.Lock()
	speed := c.speed
	c.mu.Unlock()
	if speed <= 0 {
		c.nextSlot = time.Time{}
		return c.checkpoint()
	}
	if now := time.Now(); c.nextSlot.Before(now) {
		c.nextSlot = now
	}
	c.nextSlot = c.nextSlot.Add(time.Duration(float64(n) / float64(speed) * float64(time.Second)))
	for {
		delay := time.Until(c.nextSlot)
		if delay <= 0 {
			return c.checkpoint()
		}
		c.mu.Lock()
		if c.cancelled {
			c.mu.Unlock()
			return ErrCancelled
		}
		c.idle = true
		c.mu.Unlock()
		c.busy.Store(false)
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-c.wake:
			timer.Stop()
		}
		c.mu.Lock()
		c.idle = false
		cancelled, newSpeed := c.cancelled, c.speed
		c.mu.Unlock()
		if cancelled {
			return ErrCancelled
		}
		if newSpeed != speed {
			// A new speed applies from now on.
			c.nextSlot = time.Now()
			return c.checkpoint()
		}
	}
}

func (c *control) shouldComplete() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.completeRequested
}

func (c *control) isCancelled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cancelled
}
