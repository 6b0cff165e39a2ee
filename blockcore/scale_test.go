package blockcore_test

import (
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
