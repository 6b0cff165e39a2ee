// Package throttle owns I/O throttling: the leaky buckets of a throttle
// group (QEMU's util/throttle.c: averages, bursts with their length,
// iops-size), their validation with the reference's texts, and Group, the
// state every member of a throttle group drains together. The
// throttle-group object (objects) holds a Group; the throttle block
// driver makes each request wait in it.
package throttle

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// BucketType indexes the six buckets, in the reference's order.
type BucketType int

const (
	BpsTotal BucketType = iota
	BpsRead
	BpsWrite
	OpsTotal
	OpsRead
	OpsWrite
	bucketCount
)

// ValueMax is THROTTLE_VALUE_MAX: the largest rate and burst volume.
const ValueMax = 1000000000000000

// Bucket is one leaky bucket: Avg units per second sustained, Max units
// per second during a burst of BurstLength seconds. level and burstLevel
// are what has been poured in and not yet leaked.
type Bucket struct {
	Avg, Max    uint64
	BurstLength uint64

	level, burstLevel float64
}

// Config is a throttle group's configuration: the buckets and the size
// (OpSize, 0 for none) above which one request counts as several I/Os.
type Config struct {
	Buckets [bucketCount]Bucket
	OpSize  uint64
}

// NewConfig returns a configuration that throttles nothing
// (throttle_config_init: every burst length is 1).
func NewConfig() Config {
	var c Config
	for i := range c.Buckets {
		c.Buckets[i].BurstLength = 1
	}
	return c
}

// Enabled reports whether any bucket limits anything.
func (c *Config) Enabled() bool {
	for _, b := range c.Buckets {
		if b.Avg > 0 {
			return true
		}
	}
	return false
}

// Valid is throttle_is_valid: the checks in the reference's order and
// with its texts.
func (c *Config) Valid() error {
	b := &c.Buckets
	conflict := func(total, read, write BucketType, f func(*Bucket) uint64) bool {
		return f(&b[total]) != 0 && (f(&b[read]) != 0 || f(&b[write]) != 0)
	}
	avg := func(x *Bucket) uint64 { return x.Avg }
	max := func(x *Bucket) uint64 { return x.Max }
	if conflict(BpsTotal, BpsRead, BpsWrite, avg) || conflict(OpsTotal, OpsRead, OpsWrite, avg) ||
		conflict(BpsTotal, BpsRead, BpsWrite, max) || conflict(OpsTotal, OpsRead, OpsWrite, max) {
		return errors.New("bps/iops/max total values and read/write values cannot be used at the same time")
	}
	if c.OpSize != 0 && b[OpsTotal].Avg == 0 && b[OpsRead].Avg == 0 && b[OpsWrite].Avg == 0 {
		return errors.New("iops size requires an iops value to be set")
	}
	for i := range b {
		k := &b[i]
		switch {
		case k.Avg > ValueMax || k.Max > ValueMax:
			return fmt.Errorf("bps/iops/max values must be within [0, %d]", ValueMax)
		case k.BurstLength == 0:
			return errors.New("the burst length cannot be 0")
		case k.BurstLength > 1 && k.Max == 0:
			return errors.New("burst length set without burst rate")
		case k.Max != 0 && k.BurstLength > ValueMax/k.Max:
			return errors.New("burst length too high for this burst rate")
		case k.Max != 0 && k.Avg == 0:
			return errors.New("bps_max/iops_max require corresponding bps/iops values")
		case k.Max != 0 && k.Max < k.Avg:
			return errors.New("bps_max/iops_max cannot be lower than bps/iops")
		}
	}
	return nil
}

// leak empties every bucket by what its rates let through in d.
func (c *Config) leak(d time.Duration) {
	if d <= 0 {
		return
	}
	secs := d.Seconds()
	for i := range c.Buckets {
		k := &c.Buckets[i]
		k.level = math.Max(k.level-float64(k.Avg)*secs, 0)
		// Bursts longer than a second also keep the burst rate itself.
		if k.BurstLength > 1 {
			k.burstLevel = math.Max(k.burstLevel-float64(k.Max)*secs, 0)
		}
	}
}

// wait is throttle_compute_wait: how long a request must wait before the
// bucket lets it through. Without a burst rate the bucket still takes a
// tenth of a second of I/O at once, so short bursts are not each delayed.
func (k *Bucket) wait() time.Duration {
	if k.Avg == 0 {
		return 0
	}
	var size, burstSize float64
	if k.Max == 0 {
		size = float64(k.Avg) / 10
	} else {
		size = float64(k.Max) * float64(k.BurstLength)
		burstSize = float64(k.Max) / 10
	}
	if extra := k.level - size; extra > 0 {
		return seconds(extra / float64(k.Avg))
	}
	if k.BurstLength > 1 {
		if extra := k.burstLevel - burstSize; extra > 0 {
			return seconds(extra / float64(k.Max))
		}
	}
	return 0
}

func seconds(s float64) time.Duration {
	d := s * float64(time.Second)
	if d >= math.MaxInt64 {
		return math.MaxInt64
	}
	return max(time.Duration(d), 1)
}

// Direction is a request's direction: reads and writes have their own
// buckets besides the total ones.
type Direction int

const (
	Read Direction = iota
	Write
)

var checked = [2][4]BucketType{
	{BpsTotal, OpsTotal, BpsRead, OpsRead},
	{BpsTotal, OpsTotal, BpsWrite, OpsWrite},
}

func (c *Config) waitFor(dir Direction) time.Duration {
	var w time.Duration
	for _, i := range checked[dir] {
		w = max(w, c.Buckets[i].wait())
	}
	return w
}

// account pours one request into its buckets (throttle_account): its
// bytes, and its size in units of OpSize (at least one I/O).
func (c *Config) account(dir Direction, bytes uint64) {
	units := 1.0
	if c.OpSize != 0 && bytes > c.OpSize {
		units = float64(bytes) / float64(c.OpSize)
	}
	bps, ops := []BucketType{BpsTotal, BpsRead}, []BucketType{OpsTotal, OpsRead}
	if dir == Write {
		bps[1], ops[1] = BpsWrite, OpsWrite
	}
	for i := range 2 {
		for _, p := range []struct {
			k BucketType
			v float64
		}{{bps[i], float64(bytes)}, {ops[i], units}} {
			k := &c.Buckets[p.k]
			k.level += p.v
			if k.BurstLength > 1 {
				k.burstLevel += p.v
			}
		}
	}
}

// Group is the state shared by the members of one throttle group: their
// requests fill the same buckets. Requests of one direction wait their
// turn in arrival order, across members, so one member cannot starve
// another.
type Group struct {
	mu       sync.Mutex
	cfg      Config
	lastLeak time.Time
	reconf   chan struct{} // closed and replaced when the config changes
	turn     [2]chan struct{}
	waiting  atomic.Int64 // requests held back by the limits now
}

// Waiting is the number of requests the limits hold back now.
func (g *Group) Waiting() int { return int(g.waiting.Load()) }

// NewGroup returns a group with the given (valid) configuration.
func NewGroup(cfg Config) *Group {
	g := &Group{cfg: cfg, lastLeak: time.Now(), reconf: make(chan struct{})}
	for i := range g.turn {
		g.turn[i] = make(chan struct{}, 1)
	}
	return g
}

// Config returns the group's configuration (its limits, not its levels).
func (g *Group) Config() Config {
	g.mu.Lock()
	defer g.mu.Unlock()
	c := g.cfg
	for i := range c.Buckets {
		c.Buckets[i].level, c.Buckets[i].burstLevel = 0, 0
	}
	return c
}

// SetConfig replaces the limits (throttle_config): the buckets start
// empty, and waiting requests look again at once.
func (g *Group) SetConfig(cfg Config) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cfg = cfg
	for i := range g.cfg.Buckets {
		g.cfg.Buckets[i].level, g.cfg.Buckets[i].burstLevel = 0, 0
	}
	g.lastLeak = time.Now()
	close(g.reconf)
	g.reconf = make(chan struct{})
}

// delay leaks the buckets up to now and says how long a request of dir
// must still wait, and what wakes it early (a new configuration).
func (g *Group) delay(dir Direction) (time.Duration, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	g.cfg.leak(now.Sub(g.lastLeak))
	g.lastLeak = now
	return g.cfg.waitFor(dir), g.reconf
}

func (g *Group) account(dir Direction, bytes uint64) {
	g.mu.Lock()
	g.cfg.account(dir, bytes)
	g.mu.Unlock()
}

// Member is one user of a group (a throttle node). Its requests wait in
// the group unless the member is drained: a drained section must not
// wait for the limits, so requests then go through at once (and are
// still counted), as the reference's io_limits_disabled does.
type Member struct {
	g *Group

	mu      sync.Mutex
	drained int
	bypass  chan struct{} // closed while drained
}

// Join makes a member of g.
func (g *Group) Join() *Member {
	return &Member{g: g, bypass: make(chan struct{})}
}

// Group returns the member's group.
func (m *Member) Group() *Group { return m.g }

// DrainBegin lets every request of the member through until DrainEnd,
// including those waiting now. Calls nest.
func (m *Member) DrainBegin() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.drained++
	if m.drained == 1 {
		close(m.bypass)
	}
}

// DrainEnd ends one DrainBegin.
func (m *Member) DrainEnd() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.drained--
	if m.drained == 0 {
		m.bypass = make(chan struct{})
	}
}

func (m *Member) bypassed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bypass
}

// Wait blocks until the group's limits let a request of bytes in
// direction dir through, then counts it (throttle_group_co_io_limits_
// intercept).
func (m *Member) Wait(dir Direction, bytes uint64) {
	g := m.g
	bypass := m.bypassed()
	select {
	case g.turn[dir] <- struct{}{}:
	case <-bypass:
		g.account(dir, bytes)
		return
	}
	defer func() { <-g.turn[dir] }()
	for {
		d, reconf := g.delay(dir)
		if d <= 0 {
			break
		}
		g.waiting.Add(1)
		t := time.NewTimer(d)
		select {
		case <-t.C:
			continue
		case <-reconf:
		case <-bypass:
		}
		g.waiting.Add(-1)
		t.Stop()
		select {
		case <-bypass:
			g.account(dir, bytes)
			return
		default:
		}
	}
	g.account(dir, bytes)
}
