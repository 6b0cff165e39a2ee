package blockcore_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"blockd/drivers/file"
	"blockd/drivers/qcow2"
)

// Permission refreshes cost image-lock calls only where permissions
// change. The counts asserted here are fcntl calls counted by the file
// driver, not times.

// qcow2Chain creates l0.qcow2 ... l<depth-1>.qcow2, each backed by the
// previous one (absolute names, format qcow2), and returns the top's path.
func qcow2Chain(t testing.TB, dir string, depth int) string {
	t.Helper()
	prev := ""
	for i := range depth {
		p := filepath.Join(dir, fmt.Sprintf("l%d.qcow2", i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := file.Open(file.Options{Filename: p})
		if err != nil {
			t.Fatal(err)
		}
		o := qcow2.CreateOptions{Size: 64 << 20}
		if prev != "" {
			o.BackingFile, o.BackingFormat = prev, "qcow2"
		}
		err = qcow2.Create(f, o)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		prev = p
	}
	return prev
}

func lockCallsOf(fn func()) uint64 {
	before := file.LockCalls()
	fn()
	return file.LockCalls() - before
}

func addChainTop(t testing.TB, e *env, top string) {
	t.Helper()
	e.mustExec(t, "blockdev-add", fmt.Sprintf(`{"driver": "qcow2", "node-name": "top", "file": {"driver": "file", "filename": %q}}`, top))
}

// Opening a chain of depth N with one blockdev-add costs a bounded number
// of lock calls per image: each file node locks and checks its bytes once.
func TestChainOpenLockCallsLinear(t *testing.T) {
	perImage := map[int]uint64{}
	for _, depth := range []int{1, 10, 200} {
		top := qcow2Chain(t, t.TempDir(), depth)
		e := newEnv(t)
		n := lockCallsOf(func() { addChainTop(t, e, top) })
		t.Logf("depth %d: %d lock calls", depth, n)
		perImage[depth] = n
	}
	// The top's file takes consistent read, write and resize and unshares
	// write and resize (5 bytes locked, 5 checked); every backing file
	// takes consistent read and unshares write and resize (3 locked, 3
	// checked): 10 + 6*(N-1), as qemu-storage-daemon's 9 per level.
	for depth, n := range perImage {
		if want := uint64(10 + 6*(depth-1)); n != want {
			t.Errorf("depth %d: %d lock calls, want %d", depth, n, want)
		}
	}
}

// explicitChain adds a chain of depth N the way management software does,
// one blockdev-add per image (file node fI, qcow2 node nI backed by
// nI-1), only the top writable; it returns the lock calls of adding the
// top layer onto the N-1 below it.
func explicitChain(t *testing.T, e *env, dir string, depth int) uint64 {
	t.Helper()
	qcow2Chain(t, dir, depth)
	var last uint64
	for i := range depth {
		ro := i < depth-1
		backing := "null"
		if i > 0 {
			backing = fmt.Sprintf(`"n%d"`, i-1)
		}
		last = lockCallsOf(func() {
			e.mustExec(t, "blockdev-add", fmt.Sprintf(`{"driver": "file", "node-name": "f%d", "read-only": %v, "filename": %q}`,
				i, ro, filepath.Join(dir, fmt.Sprintf("l%d.qcow2", i))))
			e.mustExec(t, "blockdev-add", fmt.Sprintf(`{"driver": "qcow2", "node-name": "n%d", "read-only": %v, "file": "f%d", "backing": %s}`,
				i, ro, i, backing))
		})
	}
	return last
}

// Changing one node of a chain touches the locks of the files whose
// permissions change, whatever the depth: adding a layer on top, reopening
// a node in the middle read-write and back, deleting the top cost the
// same number of lock calls at depth 10 and 200.
func TestChainChangesTouchOnlyChangedFiles(t *testing.T) {
	steps := []string{"add top layer", "reopen middle read-write", "reopen middle read-only", "delete top"}
	calls := map[int][]uint64{}
	for _, depth := range []int{10, 200} {
		e, dir := newEnv(t), t.TempDir()
		c := []uint64{explicitChain(t, e, dir, depth)}
		mid := depth / 2
		reopen := func(ro bool) string {
			return fmt.Sprintf(`{"options": [{"driver": "file", "node-name": "f%d", "read-only": %v, "filename": %q},
				{"driver": "qcow2", "node-name": "n%d", "read-only": %v, "file": "f%d", "backing": "n%d"}]}`,
				mid, ro, filepath.Join(dir, fmt.Sprintf("l%d.qcow2", mid)), mid, ro, mid, mid-1)
		}
		c = append(c, lockCallsOf(func() { e.mustExec(t, "blockdev-reopen", reopen(false)) }))
		c = append(c, lockCallsOf(func() { e.mustExec(t, "blockdev-reopen", reopen(true)) }))
		c = append(c, lockCallsOf(func() {
			e.mustExec(t, "blockdev-del", fmt.Sprintf(`{"node-name": "n%d"}`, depth-1))
		}))
		calls[depth] = c
	}
	for i, s := range steps {
		t.Logf("%s: %d lock calls at depth 10, %d at depth 200", s, calls[10][i], calls[200][i])
		if calls[10][i] != calls[200][i] || calls[10][i] == 0 {
			t.Errorf("%s: %d lock calls at depth 10, %d at depth 200; want the same, not 0", s, calls[10][i], calls[200][i])
		}
	}
}

// Adding a node to a graph of N unrelated nodes costs the same at N=10
// and N=10,000: the refresh starts at the new node and reaches nothing
// else.
func TestAddBesideUnrelatedNodesCostsTheSame(t *testing.T) {
	tmpl := qcow2Chain(t, t.TempDir(), 1)
	img, err := os.ReadFile(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	add := func(e *env, dir string, i int) {
		p := filepath.Join(dir, fmt.Sprintf("i%d.qcow2", i))
		writeSparse(t, p, img)
		e.mustExec(t, "blockdev-add", fmt.Sprintf(`{"driver": "qcow2", "node-name": "q%d", "file": {"driver": "file", "filename": %q}}`, i, p))
	}
	calls := map[int]uint64{}
	for _, n := range []int{10, 10000} {
		e, dir := newEnv(t), t.TempDir()
		for i := range n {
			add(e, dir, i)
		}
		calls[n] = lockCallsOf(func() { add(e, dir, n) })
	}
	if calls[10] != calls[10000] || calls[10] == 0 {
		t.Errorf("adding a node: %d lock calls beside 10 nodes, %d beside 10,000", calls[10], calls[10000])
	}
}

// writeSparse writes b to path leaving its zero blocks as holes, so that
// thousands of image copies take little disk.
func writeSparse(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(len(b))); err != nil {
		t.Fatal(err)
	}
	const block = 4096
	zero := make([]byte, block)
	for off := 0; off < len(b); off += block {
		chunk := b[off:min(off+block, len(b))]
		if !bytes.Equal(chunk, zero[:len(chunk)]) {
			if _, err := f.WriteAt(chunk, int64(off)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// BenchmarkChainOpen opens a qcow2 chain with one blockdev-add (the
// figures against qemu-storage-daemon come from bench/scale).
func BenchmarkChainOpen(b *testing.B) {
	for _, depth := range []int{100, 500} {
		b.Run(fmt.Sprint("depth", depth), func(b *testing.B) {
			top := qcow2Chain(b, b.TempDir(), depth)
			for b.Loop() {
				b.StopTimer()
				e := newEnv(b)
				b.StartTimer()
				addChainTop(b, e, top)
				b.StopTimer()
				_ = e.do(func() error { e.g.CloseAll(); return nil })
				b.StartTimer()
			}
		})
	}
}

// BenchmarkChainReopen reopens the top of a depth-200 chain read-only and
// read-write in turn.
func BenchmarkChainReopen(b *testing.B) {
	top := qcow2Chain(b, b.TempDir(), 200)
	e := newEnv(b)
	e.mustExec(b, "blockdev-add", fmt.Sprintf(`{"driver": "qcow2", "node-name": "top", "file": {"driver": "file", "node-name": "top-file", "filename": %q}}`, top))
	backing := e.node(b, "top").Backing().Name()
	ro := true
	for b.Loop() {
		e.mustExec(b, "blockdev-reopen", fmt.Sprintf(`{"options": [{"driver": "qcow2", "node-name": "top", "read-only": %v, "file": "top-file", "backing": %q}]}`, ro, backing))
		ro = !ro
	}
}
