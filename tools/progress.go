package tools

import "sync"

// progress is qemu-img's progress meter (util/qemu-progress.c): with -p
// it prints "    (NN.NN/100%)\r" whenever the value moved by more than
// minSkip percent since the last print, or reached 0 or 100, and a
// newline at the end. Values are float32, as QEMU computes them, so the
// printed figures match.
type progress struct {
	mu                     sync.Mutex
	t                      *tool
	on                     bool
	current, last, minSkip float32
}

func newProgress(t *tool, on bool, minSkip float32) *progress {
	return &progress{t: t, on: on, minSkip: minSkip}
}

// print is qemu_progress_print: with max == 0 delta is the absolute
// value, otherwise it adds delta*max/100.
func (p *progress) print(delta float32, max int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := delta
	if max != 0 {
		cur = p.current + delta/100*float32(max)
	}
	if cur > 100 {
		cur = 100
	}
	p.current = cur
	if cur > p.last+p.minSkip || cur == 100 || cur == 0 {
		p.last = cur
		if p.on {
			p.t.printf("    (%3.2f/100%%)\r", cur)
			p.t.out.Flush()
		}
	}
}

// end is qemu_progress_end.
func (p *progress) end() {
	if p.on {
		p.t.printf("\n")
		p.t.out.Flush()
	}
}
