package jobs

import "blockd/blockio"

// rangeLock is the jobs' name for blockio.RangeLock: a job's copy of a
// range and a guest write to it through the job's filter never run at
// once.
type rangeLock = blockio.RangeLock

func newRangeLock() *rangeLock { return blockio.NewRangeLock() }
