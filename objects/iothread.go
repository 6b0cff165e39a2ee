package objects

import (
	"encoding/json"
	"math"

	"blockd/internal/qdict"
	"blockd/schema"
)

// An iothread object is accepted with the reference's properties and
// checks, and its values can be read and changed with qom-get/qom-set.
// blockd has no event-loop threads for them to configure: every node's
// requests run on the goroutines of their callers (export connections,
// job workers), concurrently, and the graph's owner goroutine plays the
// main loop's part. Nodes moved with x-blockdev-set-iothread keep
// working the same way.
type iothreadInst struct {
	vals map[string]int64
}

// The event loop's integer properties and their defaults: thread-pool-max
// is the reference's THREAD_POOL_MAX_THREADS, poll-max-ns its
// IOTHREAD_POLL_MAX_NS_DEFAULT.
var eventLoopDefaults = map[string]int64{
	"aio-max-batch": 0, "thread-pool-min": 0, "thread-pool-max": 64,
	"poll-max-ns": 32768, "poll-grow": 0, "poll-shrink": 0,
}

func iothreadOf(inst any) *iothreadInst { return inst.(*iothreadInst) }

// checkPool is aio_context_set_thread_pool_params' check.
func (t *iothreadInst) checkPool() error {
	lo, hi := t.vals["thread-pool-min"], t.vals["thread-pool-max"]
	if lo > hi || hi == 0 || lo > math.MaxInt32 || hi > math.MaxInt32 {
		return schema.Errorf("bad thread-pool-min/thread-pool-max values")
	}
	return nil
}

func loopProp(name string) Property {
	return Property{Name: name, Type: "int",
		Get: func(inst any) any { return iothreadOf(inst).vals[name] },
		Set: func(inst any, n string, v json.RawMessage) error {
			i, err := visitInt(n, v)
			if err != nil {
				return err
			}
			if err := nonNegative(n, i); err != nil {
				return err
			}
			t := iothreadOf(inst)
			// The reference keeps the value even when the pool
			// refuses it.
			t.vals[name] = i
			if name == "thread-pool-min" || name == "thread-pool-max" {
				return t.checkPool()
			}
			return nil
		}}
}

func init() {
	RegisterClass(&Class{Name: "event-loop-base", Parent: "object", Abstract: true,
		Interfaces: []string{"user-creatable"},
		Props:      []Property{loopProp("aio-max-batch"), loopProp("thread-pool-min"), loopProp("thread-pool-max")}})
	RegisterClass(&Class{Name: "iothread", Parent: "event-loop-base",
		Props: []Property{loopProp("poll-max-ns"), loopProp("poll-grow"), loopProp("poll-shrink")},
		Init: func(o *ObjectOptions) (any, error) {
			p := o.Iothread
			if p == nil {
				p = &IothreadProperties{}
			}
			return newEventLoop(map[string]*int64{
				"aio-max-batch": p.AioMaxBatch, "thread-pool-min": p.ThreadPoolMin,
				"thread-pool-max": p.ThreadPoolMax, "poll-max-ns": p.PollMaxNs,
				"poll-grow": p.PollGrow, "poll-shrink": p.PollShrink,
			})
		},
		Complete: func(_ *Registry, inst any) error { return iothreadOf(inst).checkPool() },
	})
}

// The main loop is blockd's owner goroutine; a main-loop object holds
// its tunables. There is one at most, and it cannot be deleted.
func init() {
	RegisterClass(&Class{Name: "main-loop", Parent: "event-loop-base",
		Init: func(o *ObjectOptions) (any, error) {
			p := o.MainLoop
			if p == nil {
				p = &EventLoopBaseProperties{}
			}
			return newEventLoop(map[string]*int64{
				"aio-max-batch": p.AioMaxBatch, "thread-pool-min": p.ThreadPoolMin,
				"thread-pool-max": p.ThreadPoolMax,
			})
		},
		Complete: func(r *Registry, inst any) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.mainLoop {
				return schema.Errorf("only one main-loop instance allowed")
			}
			if err := iothreadOf(inst).checkPool(); err != nil {
				return err
			}
			r.mainLoop = true
			return nil
		},
		CanBeDeleted: func(any) bool { return false },
	})
}

// newEventLoop sets the given properties over the defaults, in the
// order of the arguments' QDict (as the reference sets them), so that of
// several bad values the same one is named.
func newEventLoop(given map[string]*int64) (*iothreadInst, error) {
	t := &iothreadInst{vals: map[string]int64{}}
	for k, v := range eventLoopDefaults {
		t.vals[k] = v
	}
	var d qdict.Dict
	for k, v := range given {
		if v != nil {
			d = d.Set(k, *v)
		}
	}
	for _, e := range d.Ordered() {
		if err := nonNegative(e.Key, e.Val.(int64)); err != nil {
			return nil, err
		}
		t.vals[e.Key] = e.Val.(int64)
	}
	return t, nil
}

// IsIothread says whether id names an iothread object (for
// x-blockdev-set-iothread).
func (r *Registry) IsIothread(id string) bool {
	n := r.lookup(id)
	if n == nil {
		return false
	}
	_, ok := n.inst.(*iothreadInst)
	return ok
}
