package objects

import (
	"encoding/json"
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

// throttleGroupInst is a throttle-group object: the configuration its
// properties build, then (once complete) the group throttle nodes join.
type throttleGroupInst struct {
	cfg throttle.Config
	tg  *throttle.Group
}

func throttleGroupOf(inst any) *throttleGroupInst { return inst.(*throttleGroupInst) }

// config is the group's live configuration, or the one being built.
func (t *throttleGroupInst) config() throttle.Config {
	if t.tg != nil {
		return t.tg.Config()
	}
	return t.cfg
}

func (f limitField) get(c *throttle.Config) int64 {
	b := c.Buckets[f.bucket]
	switch f.kind {
	case fAvg:
		return int64(b.Avg)
	case fMax:
		return int64(b.Max)
	case fLength:
		return int64(b.BurstLength)
	}
	return int64(c.OpSize)
}

// throttleLimits is throttle_config_to_limits: every member set.
func throttleLimits(c *throttle.Config) *schema.ThrottleLimits {
	l := &schema.ThrottleLimits{}
	for i, p := range limitPtrs(l) {
		v := limitFields[i].get(c)
		*p = &v
	}
	return l
}

// limitPtrs are the addresses of l's members, in limitFields' order.
func limitPtrs(l *schema.ThrottleLimits) []**int64 {
	return []**int64{
		&l.IopsTotal, &l.IopsTotalMax, &l.IopsTotalMaxLength, &l.IopsRead, &l.IopsReadMax, &l.IopsReadMaxLength,
		&l.IopsWrite, &l.IopsWriteMax, &l.IopsWriteMaxLength, &l.BpsTotal, &l.BpsTotalMax, &l.BpsTotalMaxLength,
		&l.BpsRead, &l.BpsReadMax, &l.BpsReadMaxLength, &l.BpsWrite, &l.BpsWriteMax, &l.BpsWriteMaxLength, &l.IopsSize,
	}
}

// setX is throttle_group_set on a group being created: each x- property
// on its own.
func setX(cfg *throttle.Config, f limitField, v int64) error {
	if v < 0 {
		return fmt.Errorf("Property values cannot be negative")
	}
	if f.kind == fLength && v > math.MaxUint32 {
		// The reference's text, its missing space included.
		return fmt.Errorf("x-%s value must be in therange [0, %d]", f.name, uint32(math.MaxUint32))
	}
	f.set(cfg, uint64(v))
	return nil
}

func xProp(f limitField) Property {
	return Property{Name: "x-" + f.name, Type: "int",
		Get: func(inst any) any {
			c := throttleGroupOf(inst).config()
			return f.get(&c)
		},
		Set: func(any, string, json.RawMessage) error {
			// Limits change together (qom-set limits), as some
			// combinations are invalid.
			return schema.Errorf("Property cannot be set after initialization")
		}}
}

// limitsProp is the limits property: throttle_group_set_limits applies
// new limits over the current ones to the live group.
var limitsProp = Property{Name: "limits", Type: "ThrottleLimits",
	Get: func(inst any) any {
		c := throttleGroupOf(inst).config()
		return throttleLimits(&c)
	},
	Set: func(inst any, name string, v json.RawMessage) error {
		var obj map[string]json.RawMessage
		if json.Unmarshal(v, &obj) != nil || obj == nil {
			return badType(name, "object")
		}
		var l schema.ThrottleLimits
		if err := schema.Decode(v, &l); err != nil {
			return err
		}
		t := throttleGroupOf(inst)
		cfg := t.config()
		if err := ApplyLimits(&cfg, &l); err != nil {
			return schema.AsError(err)
		}
		if t.tg != nil {
			t.tg.SetConfig(cfg)
		} else {
			t.cfg = cfg
		}
		return nil
	}}

func init() {
	props := make([]Property, 0, len(limitFields)+1)
	for _, f := range limitFields {
		props = append(props, xProp(f))
	}
	props = append(props, limitsProp)
	RegisterClass(&Class{Name: "throttle-group", Parent: "object",
		Interfaces: []string{"user-creatable"},
		Props:      props,
		// The properties' setters: each x- property on its own, then
		// limits (checked as a whole).
		Init: func(o *ObjectOptions) (any, error) {
			p := o.ThrottleGroup
			if p == nil {
				p = &ThrottleGroupProperties{}
			}
			t := &throttleGroupInst{cfg: throttle.NewConfig()}
			for i, v := range p.xValues() {
				if v == nil {
					continue
				}
				if err := setX(&t.cfg, limitFields[i], *v); err != nil {
					return nil, err
				}
			}
			if p.Limits != nil {
				if err := ApplyLimits(&t.cfg, p.Limits); err != nil {
					return nil, err
				}
			}
			return t, nil
		},
		// throttle_group_obj_complete checks the whole configuration.
		Complete: func(_ *Registry, inst any) error {
			t := throttleGroupOf(inst)
			if err := t.cfg.Valid(); err != nil {
				return err
			}
			t.tg = throttle.NewGroup(t.cfg)
			return nil
		},
	})
}

// ThrottleGroup returns the throttle group id, pinned so that object-del
// refuses it until release is called; the text for a missing group is the
// throttle driver's.
func (r *Registry) ThrottleGroup(id string) (g *throttle.Group, release func(), err error) {
	var t *throttleGroupInst
	if obj := r.lookup(id); obj != nil {
		t, _ = obj.inst.(*throttleGroupInst)
	}
	if t == nil || t.tg == nil {
		return nil, nil, schema.Errorf("Throttle group '%s' does not exist", id)
	}
	if release, err = r.Use(id); err != nil {
		return nil, nil, schema.Errorf("Throttle group '%s' does not exist", id)
	}
	return t.tg, release, nil
}
