package objects

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"blockd/internal/errtext"
	"blockd/schema"
)

// threadContextInst is a thread-context object (QEMU's
// util/thread-context.c): a thread that exists for its CPU affinity,
// which threads QEMU creates through it inherit. In qemu-storage-daemon
// only guest memory backends create threads that way, and blockd has
// none, so the thread only holds its affinity, as there: it is a real
// thread (thread-id is its TID), its affinity is set and read with the
// system calls QEMU uses, and object-del ends it.
type threadContextInst struct {
	// initCPUs is the affinity set before the thread exists (at
	// object-add); nil once it runs.
	initCPUs []int
	tid      int
	stop     chan struct{}
}

func threadOf(inst any) *threadContextInst { return inst.(*threadContextInst) }

// decodeAffinity decodes qom-set's value of cpu-affinity or
// node-affinity as visit_type_uint16List does, with its texts (which
// name the property).
func decodeAffinity(name string, v json.RawMessage) ([]uint16, error) {
	var p ThreadContextProperties
	if err := schema.Decode(json.RawMessage(`{"`+name+`":`+string(v)+`}`), &p); err != nil {
		return nil, err
	}
	if name == "cpu-affinity" {
		return *p.CPUAffinity, nil
	}
	return *p.NodeAffinity, nil
}

func init() {
	RegisterClass(&Class{Name: "thread-context", Parent: "object",
		Interfaces: []string{"user-creatable"},
		Props: []Property{
			{Name: "thread-id", Type: "int", Get: func(inst any) any { return threadOf(inst).tid }},
			{Name: "cpu-affinity", Type: "int",
				Get: func(inst any) any { return threadOf(inst).affinity() },
				Set: func(inst any, n string, v json.RawMessage) error {
					l, err := decodeAffinity(n, v)
					if err != nil {
						return err
					}
					return threadOf(inst).setCPUs(l)
				}},
			{Name: "node-affinity", Type: "int",
				Set: func(inst any, n string, v json.RawMessage) error {
					t := threadOf(inst)
					if t.initCPUs != nil {
						return schema.Errorf("Mixing CPU and node affinity not supported")
					}
					l, err := decodeAffinity(n, v)
					if err != nil {
						return err
					}
					return t.setNodes(l)
				}},
		},
		Init: func(o *ObjectOptions) (any, error) {
			// The setters in the reference's order: cpu-affinity, then
			// node-affinity, which refuses to follow it.
			t := &threadContextInst{tid: -1}
			p := o.ThreadContext
			if p == nil {
				return t, nil
			}
			if p.CPUAffinity != nil {
				if err := t.setCPUs(*p.CPUAffinity); err != nil {
					return nil, err
				}
			}
			if p.NodeAffinity != nil {
				if t.initCPUs != nil {
					return nil, schema.Errorf("Mixing CPU and node affinity not supported")
				}
				if err := t.setNodes(*p.NodeAffinity); err != nil {
					return nil, err
				}
			}
			return t, nil
		},
		Complete: func(_ *Registry, inst any) error { return threadOf(inst).start() },
		Finalize: func(inst any) { threadOf(inst).end() },
	})
}

// setCPUs is thread_context_set_cpu_affinity.
func (t *threadContextInst) setCPUs(cpus []uint16) error {
	if len(cpus) == 0 {
		return schema.Errorf("CPU list is empty")
	}
	l := make([]int, len(cpus))
	for i, c := range cpus {
		l[i] = int(c)
	}
	return t.apply(l)
}

// setNodes is thread_context_set_node_affinity: the CPUs of the nodes
// (libnuma's numa_node_to_cpus, which reads sysfs); nodes that do not
// exist add none.
func (t *threadContextInst) setNodes(nodes []uint16) error {
	if len(nodes) == 0 {
		return schema.Errorf("Node list is empty")
	}
	var cpus []int
	for _, n := range nodes {
		b, err := os.ReadFile(fmt.Sprintf("/sys/devices/system/node/node%d/cpulist", n))
		if err != nil {
			continue
		}
		cpus = append(cpus, parseCPUList(strings.TrimSpace(string(b)))...)
	}
	if len(cpus) == 0 {
		return schema.Errorf("The nodes select no CPUs")
	}
	return t.apply(cpus)
}

// parseCPUList reads the kernel's list format, "0-3,8,10-11".
func parseCPUList(s string) []int {
	var out []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	return out
}

// apply sets the thread's affinity, or keeps it for the thread to come.
func (t *threadContextInst) apply(cpus []int) error {
	if t.tid == -1 {
		t.initCPUs = cpus
		return nil
	}
	if err := setAffinity(t.tid, cpus); err != nil {
		return schema.Errorf("Setting CPU affinity failed: %s", errtext.Strerror(err.(syscall.Errno)))
	}
	return nil
}

// start is thread_context_instance_complete: the thread, then the
// affinity given at object-add.
func (t *threadContextInst) start() error {
	t.stop = make(chan struct{})
	tid := make(chan int)
	for t.tid == -1 {
		go func() {
			runtime.LockOSThread()
			id := unix.Gettid()
			if id == unix.Getpid() {
				// The process's main thread, which Go parks rather
				// than ends when its goroutine exits: give it back
				// and try another.
				runtime.UnlockOSThread()
				tid <- -1
				return
			}
			tid <- id
			// Never unlocked: when this goroutine returns, its thread
			// ends with it, so no other goroutine runs with this
			// affinity.
			<-t.stop
		}()
		t.tid = <-tid
	}
	cpus := t.initCPUs
	t.initCPUs = nil
	if cpus != nil {
		return t.apply(cpus)
	}
	return nil
}

func (t *threadContextInst) end() {
	if t.stop != nil {
		close(t.stop)
	}
}

// affinity is thread_context_get_cpu_affinity: the CPUs the thread may
// run on, ascending.
func (t *threadContextInst) affinity() any {
	if t.tid == -1 {
		return schema.Errorf("Object not initialized yet")
	}
	cpus, err := getAffinity(t.tid)
	if err != nil {
		return schema.Errorf("Getting CPU affinity failed: %s", errtext.Strerror(err.(syscall.Errno)))
	}
	return cpus
}

// setAffinity is sched_setaffinity with a mask as long as the highest
// CPU needs (QEMU's CPU_ALLOC): bits past the kernel's CPUs are ignored,
// and a mask with no usable CPU is EINVAL.
func setAffinity(tid int, cpus []int) error {
	mask := make([]uint64, slices.Max(cpus)/64+1)
	for _, c := range cpus {
		mask[c/64] |= 1 << (c % 64)
	}
	_, _, e := unix.RawSyscall(unix.SYS_SCHED_SETAFFINITY, uintptr(tid), uintptr(len(mask)*8), uintptr(unsafe.Pointer(&mask[0])))
	if e != 0 {
		return e
	}
	return nil
}

func getAffinity(tid int) ([]int, error) {
	// Room for as many CPUs as the kernel may have; it answers with the
	// size of its own mask.
	mask := make([]uint64, 8192/64)
	n, _, e := unix.RawSyscall(unix.SYS_SCHED_GETAFFINITY, uintptr(tid), uintptr(len(mask)*8), uintptr(unsafe.Pointer(&mask[0])))
	if e != 0 {
		return nil, e
	}
	cpus := []int{}
	for i, w := range mask[:n/8] {
		for w != 0 {
			b := bits.TrailingZeros64(w)
			cpus = append(cpus, i*64+b)
			w &^= 1 << b
		}
	}
	return cpus, nil
}
