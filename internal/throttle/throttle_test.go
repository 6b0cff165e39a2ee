package throttle

import (
	"testing"
	"time"
)

func TestValid(t *testing.T) {
	cases := []struct {
		name string
		set  func(c *Config)
		want string
	}{
		{"empty", func(c *Config) {}, ""},
		{"total and read", func(c *Config) { c.Buckets[BpsTotal].Avg, c.Buckets[BpsRead].Avg = 1, 1 },
			"bps/iops/max total values and read/write values cannot be used at the same time"},
		{"total and write max", func(c *Config) {
			c.Buckets[OpsTotal].Avg, c.Buckets[OpsTotal].Max = 1, 2
			c.Buckets[OpsWrite].Avg, c.Buckets[OpsWrite].Max = 1, 2
		}, "bps/iops/max total values and read/write values cannot be used at the same time"},
		{"op size alone", func(c *Config) { c.OpSize = 4096 }, "iops size requires an iops value to be set"},
		{"op size with iops-read", func(c *Config) { c.OpSize, c.Buckets[OpsRead].Avg = 4096, 5 }, ""},
		{"too high", func(c *Config) { c.Buckets[BpsWrite].Avg = ValueMax + 1 }, "bps/iops/max values must be within [0, 1000000000000000]"},
		{"zero length", func(c *Config) { c.Buckets[BpsTotal].BurstLength = 0 }, "the burst length cannot be 0"},
		{"length without max", func(c *Config) { c.Buckets[BpsTotal].Avg, c.Buckets[BpsTotal].BurstLength = 1, 2 }, "burst length set without burst rate"},
		{"length too high", func(c *Config) {
			c.Buckets[BpsTotal].Avg, c.Buckets[BpsTotal].Max, c.Buckets[BpsTotal].BurstLength = 1, ValueMax, 2
		}, "burst length too high for this burst rate"},
		{"max without avg", func(c *Config) { c.Buckets[OpsRead].Max = 3 }, "bps_max/iops_max require corresponding bps/iops values"},
		{"max below avg", func(c *Config) { c.Buckets[OpsRead].Avg, c.Buckets[OpsRead].Max = 3, 2 }, "bps_max/iops_max cannot be lower than bps/iops"},
	}
	for _, tc := range cases {
		c := NewConfig()
		tc.set(&c)
		err := c.Valid()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// The bucket lets a tenth of a second of I/O through at once, then makes
// requests wait for the excess to leak at the average rate.
func TestWaitAverage(t *testing.T) {
	c := NewConfig()
	c.Buckets[BpsTotal].Avg = 1000
	c.account(Write, 100)
	if w := c.waitFor(Write); w != 0 {
		t.Fatalf("within the bucket: wait %v", w)
	}
	c.account(Read, 400) // level 500: 400 over the bucket of 100
	if w := c.waitFor(Read); w != 400*time.Millisecond {
		t.Fatalf("wait %v, want 400ms", w)
	}
	c.leak(300 * time.Millisecond)
	if w := c.waitFor(Write); w != 100*time.Millisecond {
		t.Fatalf("after a leak of 300ms: wait %v, want 100ms", w)
	}
	c.leak(time.Hour)
	if w := c.waitFor(Write); w != 0 || c.Buckets[BpsTotal].level != 0 {
		t.Fatalf("drained bucket: wait %v level %v", w, c.Buckets[BpsTotal].level)
	}
}

// Reads do not fill write buckets, and iops-size counts big requests as
// several I/Os.
func TestWaitDirectionsAndOpSize(t *testing.T) {
	c := NewConfig()
	c.Buckets[OpsWrite].Avg = 10
	c.OpSize = 4096
	c.account(Read, 1<<20)
	if w := c.waitFor(Write); w != 0 {
		t.Fatalf("a read filled the write bucket: wait %v", w)
	}
	c.account(Write, 8*4096) // 8 I/Os, bucket of 1
	if w := c.waitFor(Write); w != 700*time.Millisecond {
		t.Fatalf("wait %v, want 700ms", w)
	}
	c.account(Write, 100) // a small request is one I/O
	if w := c.waitFor(Write); w != 800*time.Millisecond {
		t.Fatalf("wait %v, want 800ms", w)
	}
}

// With a burst rate, max*length units go through before the average
// applies, but no faster than max per second.
func TestWaitBurst(t *testing.T) {
	c := NewConfig()
	k := &c.Buckets[OpsTotal]
	k.Avg, k.Max, k.BurstLength = 10, 100, 3
	c.account(Read, 1) // 1 I/O: burst bucket of 10 not full
	if w := c.waitFor(Read); w != 0 {
		t.Fatalf("wait %v", w)
	}
	for range 19 {
		c.account(Read, 1)
	}
	// burst level 20 over a burst bucket of 10: wait 10/100 s.
	if w := c.waitFor(Read); w != 100*time.Millisecond {
		t.Fatalf("burst wait %v, want 100ms", w)
	}
	c.leak(time.Second) // main level 10, burst level 0
	for range 300 {
		c.account(Read, 1)
	}
	// main level 310 over a bucket of 300: wait 10/10 s.
	if w := c.waitFor(Read); w != time.Second {
		t.Fatalf("main wait %v, want 1s", w)
	}
}

// A drained member's requests, also one already waiting, go through at
// once.
func TestMemberDrainLetsWaitersGo(t *testing.T) {
	c := NewConfig()
	c.Buckets[BpsTotal].Avg = 1
	g := NewGroup(c)
	m := g.Join()
	m.Wait(Write, 1<<20) // the first request fits the empty bucket
	done := make(chan struct{})
	go func() {
		m.Wait(Write, 1) // would wait about 12 days
		close(done)
	}()
	m.DrainBegin()
	<-done
	m.Wait(Read, 1<<20) // drained: no wait
	m.DrainEnd()
	if lvl := g.cfg.Buckets[BpsTotal].level; lvl < 2<<20 {
		t.Fatalf("drained requests were not counted: level %v", lvl)
	}
}

// A new configuration wakes waiting requests, which then see it.
func TestSetConfigWakesWaiters(t *testing.T) {
	c := NewConfig()
	c.Buckets[BpsTotal].Avg = 1
	g := NewGroup(c)
	m := g.Join()
	m.Wait(Write, 1<<20)
	done := make(chan struct{})
	go func() {
		m.Wait(Write, 1)
		close(done)
	}()
	g.SetConfig(NewConfig())
	<-done
	if got := g.Config(); got.Enabled() {
		t.Fatalf("config still limits: %+v", got)
	}
}
