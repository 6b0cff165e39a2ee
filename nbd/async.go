package nbd

import (
	"sync"

	"go.uber.org/zap"

	"blockd/blockio"
)

// Reads and writes a device can start and end on its own
// (blockio.AsyncDevice: an rbd image) skip the workers. The reader
// goroutine starts them in the order they arrive, the device's
// completion queues the outcome without waiting, and one goroutine per
// connection answers what is queued, several replies in one write when
// requests end together. Against a worker per request this saves two
// goroutine hand-offs a request, and a device's completions never wait
// for a client that is slow to read its replies.

// asyncDone is a request the device has ended.
type asyncDone struct {
	r   request
	buf []byte // a READ's data
	err error
}

// replyQueue answers the requests of one connection that ran
// asynchronously. Its goroutine starts with the first such request
// (connections to files never start it); transmit owns started and
// stops it.
type replyQueue struct {
	c       *conn
	wg      *sync.WaitGroup // transmit's: one count per request queued or in flight
	mu      sync.Mutex
	q       []asyncDone
	wake    chan struct{} // 1-buffered: a wake-up is pending
	ended   chan struct{}
	started bool
}

func (c *conn) newReplyQueue(wg *sync.WaitGroup) *replyQueue {
	return &replyQueue{c: c, wg: wg, wake: make(chan struct{}, 1), ended: make(chan struct{})}
}

// start starts a READ or WRITE on a device that can end it on its own
// and reports whether it did; if not, nothing was done and the request
// goes to a worker, which also answers requests that are not valid.
func (c *conn) start(r request, q *replyQueue) bool {
	req := r.Request
	if req.Type != CmdRead && req.Type != CmdWrite || req.Length == 0 {
		return false
	}
	// Asked first, so that requests to other devices (files) cost no
	// buffer, closure or second validation here.
	dev := c.exp.Dev
	if !blockio.EndsRequests(dev) {
		return false
	}
	if errno, _ := c.validate(req); errno != 0 {
		return false
	}
	off := int64(req.Offset)
	q.wg.Add(1)
	ok := false
	switch req.Type {
	case CmdRead:
		buf := getBuf(int(req.Length))
		ok = blockio.StartReadAt(dev, buf, off, func(err error) { q.push(asyncDone{r, buf, err}) })
		if !ok {
			putBuf(buf)
		}
	case CmdWrite:
		var f blockio.WriteFlags
		if req.Flags&CmdFlagFUA != 0 {
			f |= blockio.FUA
		}
		ok = blockio.StartWriteAt(dev, r.payload, off, f, func(err error) { q.push(asyncDone{r: r, err: err}) })
	}
	if !ok {
		q.wg.Done()
		return false
	}
	if !q.started {
		q.started = true
		go q.answer()
	}
	return true
}

// push queues an ended request; it runs where the device completes
// requests and never blocks. The wake-up is sent under mu: once the
// request is taken it may be answered and transmit may stop the queue,
// which closes wake under mu too.
func (q *replyQueue) push(d asyncDone) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.q = append(q.q, d)
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// answer sends the replies of whatever has ended, then lets the
// requests go, until stop.
func (q *replyQueue) answer() {
	defer close(q.ended)
	var batch []asyncDone
	var out [][]byte
	for range q.wake {
		q.mu.Lock()
		batch, q.q = q.q, batch[:0]
		q.mu.Unlock()
		out = out[:0]
		for _, d := range batch {
			out = q.c.appendReply(out, d)
		}
		if len(out) > 0 {
			_ = q.c.sendv(out...)
		}
		for i, d := range batch {
			if d.buf != nil {
				putBuf(d.buf)
			}
			if d.r.payload != nil {
				putBuf(d.r.payload)
			}
			<-d.r.slots
			q.wg.Done()
			batch[i] = asyncDone{}
		}
	}
}

// stop ends the goroutine once every request started has been answered
// (transmit waits for them first).
func (q *replyQueue) stop() {
	if q.started {
		q.mu.Lock()
		close(q.wake)
		q.mu.Unlock()
		<-q.ended
	}
}

// appendReply appends the reply of an ended request to out. A READ's
// holes are found now, after the read, where a worker finds them before
// it: a structured reply still shows them as OFFSET_HOLE chunks.
func (c *conn) appendReply(out [][]byte, d asyncDone) (res [][]byte) {
	req := d.r.Request
	defer func() {
		if p := recover(); p != nil {
			c.s.log.Error("nbd reply panicked", zap.Any("panic", p))
			res = append(out, c.errorReply(req, EIO, "internal error"))
		}
	}()
	if d.err != nil {
		return append(out, c.errorReply(req, Errno(d.err), d.err.Error()))
	}
	switch {
	case req.Type == CmdWrite:
		return append(out, AppendSimpleReply(nil, 0, req.Cookie))
	case !c.structured:
		return append(out, AppendSimpleReply(nil, 0, req.Cookie), d.buf)
	case req.Flags&CmdFlagDF != 0:
		return append(out, dataChunkHeader(req), d.buf)
	}
	exts, err := readExtents(c.exp.Dev, int64(req.Offset), int64(req.Length))
	if err != nil {
		return append(out, c.holeCheckError(req, err))
	}
	if len(exts) == 1 && !exts[0].hole {
		return append(out, dataChunkHeader(req), d.buf)
	}
	return append(out, sparseChunks(req, exts, d.buf)...)
}
