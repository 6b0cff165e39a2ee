package objects

import (
	"fmt"
	"math"

	"blockd/internal/throttle"
	"blockd/schema"
)

// ThrottleGroupProperties are a throttle-group's properties: limits, and
// the same limits one by one as unstable x- properties.
type ThrottleGroupProperties struct {
	Limits *schema.ThrottleLimits `qapi:"limits,optional"`

	XIopsTotal          *int64 `qapi:"x-iops-total,optional,features=unstable"`
	XIopsTotalMax       *int64 `qapi:"x-iops-total-max,optional,features=unstable"`
	XIopsTotalMaxLength *int64 `qapi:"x-iops-total-max-length,optional,features=unstable"`
	XIopsRead           *int64 `qapi:"x-iops-read,optional,features=unstable"`
	XIopsReadMax        *int64 `qapi:"x-iops-read-max,optional,features=unstable"`
	XIopsReadMaxLength  *int64 `qapi:"x-iops-read-max-length,optional,features=unstable"`
	XIopsWrite          *int64 `qapi:"x-iops-write,optional,features=unstable"`
	XIopsWriteMax       *int64 `qapi:"x-iops-write-max,optional,features=unstable"`
	XIopsWriteMaxLength *int64 `qapi:"x-iops-write-max-length,optional,features=unstable"`
	XBpsTotal           *int64 `qapi:"x-bps-total,optional,features=unstable"`
	XBpsTotalMax        *int64 `qapi:"x-bps-total-max,optional,features=unstable"`
	XBpsTotalMaxLength  *int64 `qapi:"x-bps-total-max-length,optional,features=unstable"`
	XBpsRead            *int64 `qapi:"x-bps-read,optional,features=unstable"`
	XBpsReadMax         *int64 `qapi:"x-bps-read-max,optional,features=unstable"`
	XBpsReadMaxLength   *int64 `qapi:"x-bps-read-max-length,optional,features=unstable"`
	XBpsWrite           *int64 `qapi:"x-bps-write,optional,features=unstable"`
	XBpsWriteMax        *int64 `qapi:"x-bps-write-max,optional,features=unstable"`
	XBpsWriteMaxLength  *int64 `qapi:"x-bps-write-max-length,optional,features=unstable"`
	XIopsSize           *int64 `qapi:"x-iops-size,optional,features=unstable"`
}

// limitField is one limit: where it goes in a throttle.Config.
type limitField struct {
	name   string // ThrottleLimits member name
	bucket throttle.BucketType
	kind   int // avg, max, burst length, or op size
}

const (
	fAvg = iota
	fMax
	fLength
	fOpSize
)

// limitFields lists the limits in ThrottleLimits' order.
var limitFields = []limitField{
	{"iops-total", throttle.OpsTotal, fAvg}, {"iops-total-max", throttle.OpsTotal, fMax}, {"iops-total-max-length", throttle.OpsTotal, fLength},
	{"iops-read", throttle.OpsRead, fAvg}, {"iops-read-max", throttle.OpsRead, fMax}, {"iops-read-max-length", throttle.OpsRead, fLength},
	{"iops-write", throttle.OpsWrite, fAvg}, {"iops-write-max", throttle.OpsWrite, fMax}, {"iops-write-max-length", throttle.OpsWrite, fLength},
	{"bps-total", throttle.BpsTotal, fAvg}, {"bps-total-max", throttle.BpsTotal, fMax}, {"bps-total-max-length", throttle.BpsTotal, fLength},
	{"bps-read", throttle.BpsRead, fAvg}, {"bps-read-max", throttle.BpsRead, fMax}, {"bps-read-max-length", throttle.BpsRead, fLength},
	{"bps-write", throttle.BpsWrite, fAvg}, {"bps-write-max", throttle.BpsWrite, fMax}, {"bps-write-max-length", throttle.BpsWrite, fLength},
	{"iops-size", 0, fOpSize},
}

func limitValues(l *schema.ThrottleLimits) []*int64 {
	return []*int64{
		l.IopsTotal, l.IopsTotalMax, l.IopsTotalMaxLength, l.IopsRead, l.IopsReadMax, l.IopsReadMaxLength,
		l.IopsWrite, l.IopsWriteMax, l.IopsWriteMaxLength, l.BpsTotal, l.BpsTotalMax, l.BpsTotalMaxLength,
		l.BpsRead, l.BpsReadMax, l.BpsReadMaxLength, l.BpsWrite, l.BpsWriteMax, l.BpsWriteMaxLength, l.IopsSize,
	}
}

func (p *ThrottleGroupProperties) xValues() []*int64 {
	return []*int64{
		p.XIopsTotal, p.XIopsTotalMax, p.XIopsTotalMaxLength, p.XIopsRead, p.XIopsReadMax, p.XIopsReadMaxLength,
		p.XIopsWrite, p.XIopsWriteMax, p.XIopsWriteMaxLength, p.XBpsTotal, p.XBpsTotalMax, p.XBpsTotalMaxLength,
		p.XBpsRead, p.XBpsReadMax, p.XBpsReadMaxLength, p.XBpsWrite, p.XBpsWriteMax, p.XBpsWriteMaxLength, p.XIopsSize,
	}
}

func (f limitField) set(c *throttle.Config, v uint64) {
	b := &c.Buckets[f.bucket]
	switch f.kind {
	case fAvg:
		b.Avg = v
	case fMax:
		b.Max = v
	case fLength:
		b.BurstLength = v
	case fOpSize:
		c.OpSize = v
	}
}

// ApplyLimits is throttle_limits_to_config: the given limits replace
// those in c (a negative value is taken as the unsigned number it is in
// the reference, which the validation then refuses), then c is checked.
func ApplyLimits(c *throttle.Config, l *schema.ThrottleLimits) error {
	for i, v := range limitValues(l) {
		if v == nil {
			continue
		}
		f := limitFields[i]
		if f.kind == fLength {
			if *v > math.MaxUint32 {
				return fmt.Errorf("%s value must be in the range [0, %d]", f.name, uint32(math.MaxUint32))
			}
			f.set(c, uint64(uint32(*v)))
			continue
		}
		f.set(c, uint64(*v))
	}
	return c.Valid()
}

// loadThrottleGroup builds a group's configuration as the reference sets
// the properties of a new throttle-group and completes it: each x-
// property on its own, then limits (checked as a whole), then the whole
// configuration.
func loadThrottleGroup(p *ThrottleGroupProperties) (*throttle.Group, error) {
	cfg := throttle.NewConfig()
	for i, v := range p.xValues() {
		if v == nil {
			continue
		}
		f := limitFields[i]
		if *v < 0 {
			return nil, fmt.Errorf("Property values cannot be negative")
		}
		if f.kind == fLength && *v > math.MaxUint32 {
			// The reference's text, its missing space included.
			return nil, fmt.Errorf("x-%s value must be in therange [0, %d]", f.name, uint32(math.MaxUint32))
		}
		f.set(&cfg, uint64(*v))
	}
	if p.Limits != nil {
		if err := ApplyLimits(&cfg, p.Limits); err != nil {
			return nil, err
		}
	}
	if err := cfg.Valid(); err != nil {
		return nil, err
	}
	return throttle.NewGroup(cfg), nil
}

// ThrottleGroup returns the throttle group id, pinned so that object-del
// refuses it until release is called; the text for a missing group is the
// throttle driver's.
func (r *Registry) ThrottleGroup(id string) (g *throttle.Group, release func(), err error) {
	obj := r.lookup(id)
	if obj == nil || obj.tg == nil {
		return nil, nil, schema.Errorf("Throttle group '%s' does not exist", id)
	}
	if release, err = r.Use(id); err != nil {
		return nil, nil, schema.Errorf("Throttle group '%s' does not exist", id)
	}
	return obj.tg, release, nil
}
