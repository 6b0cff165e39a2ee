package blockcore

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// IOOp is a kind of request counted by IOStats.
type IOOp uint8

const (
	OpRead IOOp = iota
	OpWrite
	OpWriteZeroes
	OpDiscard
	OpFlush
	numIOOps
)

// IOOps lists every IOOp, in order.
var IOOps = [...]IOOp{OpRead, OpWrite, OpWriteZeroes, OpDiscard, OpFlush}

func (o IOOp) String() string {
	return [...]string{"read", "write", "write_zeroes", "discard", "flush"}[o]
}

// LatencyBuckets is the number of latency histogram buckets: bucket i
// counts requests that took at most LatencyBound(i); the last one counts
// the rest.
const LatencyBuckets = 24

// latencyShift makes bucket 0 end at 2^10 ns (about 1 µs); each following
// bucket doubles, up to 2^33 ns (8.6 s).
const latencyShift = 10

// LatencyBound is the upper bound of bucket i (i < LatencyBuckets-1).
func LatencyBound(i int) time.Duration { return time.Duration(1) << (latencyShift + i) }

// IOStats counts the requests made on one node's data path (or one
// export): operations, bytes, failures, total time and a latency
// histogram per kind of request. Every field is an atomic, updated by the
// goroutine that made the request, so counting costs a few uncontended
// atomic adds and two clock reads; readers (query-blockstats, metrics)
// take a Snapshot at any time from any goroutine.
type IOStats struct {
	ops             [numIOOps]opStats
	wrHighestOffset atomic.Int64 // end of the highest write, as wr_highest_offset
	lastIO          atomic.Int64 // IOStart of the last request's end, plus 1; for idle_time_ns
}

type opStats struct {
	ops, bytes, failed, totalNs atomic.Uint64
	hist                        [LatencyBuckets]atomic.Uint64
}

// clockBase anchors IOStart: time.Since of a fixed time reads only the
// monotonic clock, one clock read where time.Now takes two.
var clockBase = time.Now()

// IOStart is when a request started: monotonic nanoseconds since
// clockBase.
type IOStart int64

// StartIO returns the start of a request to Account.
func StartIO() IOStart { return IOStart(time.Since(clockBase)) }

// Account records one request of kind op over n bytes that started at
// start and ended with err. A nil IOStats counts nothing.
func (s *IOStats) Account(op IOOp, off, n int64, start IOStart, err error) {
	if s == nil {
		return
	}
	end := StartIO()
	d := end - start
	o := &s.ops[op]
	o.ops.Add(1)
	if err != nil {
		o.failed.Add(1)
	} else if n > 0 {
		o.bytes.Add(uint64(n))
		if op == OpWrite || op == OpWriteZeroes {
			for {
				cur := s.wrHighestOffset.Load()
				if off+n <= cur || s.wrHighestOffset.CompareAndSwap(cur, off+n) {
					break
				}
			}
		}
	}
	ns := max(int64(d), 0)
	o.totalNs.Add(uint64(ns))
	o.hist[latencyBucket(ns)].Add(1)
	s.lastIO.Store(int64(end) + 1) // +1: 0 means no request yet
}

// latencyBucket is the first bucket whose bound is >= ns.
func latencyBucket(ns int64) int {
	if ns <= 1<<latencyShift {
		return 0
	}
	b := bits.Len64(uint64(ns-1)) - latencyShift
	return min(b, LatencyBuckets-1)
}

// OpSnapshot is the counters of one kind of request.
type OpSnapshot struct {
	Ops     uint64 // requests, failed ones included
	Bytes   uint64 // bytes of the requests that succeeded
	Failed  uint64
	TotalNs uint64 // time spent in all requests
	// Latency[i] counts requests that took at most LatencyBound(i) and
	// more than LatencyBound(i-1); the last bucket has no upper bound.
	Latency [LatencyBuckets]uint64
}

// IOSnapshot is a copy of an IOStats at one moment.
type IOSnapshot struct {
	Ops             [numIOOps]OpSnapshot // indexed by IOOp
	WrHighestOffset int64
	LastIO          time.Time // zero when no request has been made
}

// Snapshot copies the counters. Each counter is read atomically; a request
// in progress may be seen in some counters and not yet in others.
func (s *IOStats) Snapshot() IOSnapshot {
	var out IOSnapshot
	for i := range s.ops {
		o, d := &s.ops[i], &out.Ops[i]
		d.Ops, d.Bytes, d.Failed, d.TotalNs = o.ops.Load(), o.bytes.Load(), o.failed.Load(), o.totalNs.Load()
		for b := range o.hist {
			d.Latency[b] = o.hist[b].Load()
		}
	}
	out.WrHighestOffset = s.wrHighestOffset.Load()
	if ns := s.lastIO.Load(); ns != 0 {
		out.LastIO = clockBase.Add(time.Duration(ns - 1))
	}
	return out
}

// Stats returns the counters of the node's data path: every request made
// through Node.IO or through an edge to the node is counted, with the
// node's own format/protocol work below it counted on its children.
func (n *Node) Stats() *IOStats { return n.io.stats }

// begin is the start time of a request to account, without reading the
// clock when nothing is counted.
func (s *IOStats) begin() IOStart {
	if s == nil {
		return 0
	}
	return StartIO()
}
