package qcow2

import (
	"bytes"
	"fmt"
	"math/rand"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// resizeCrashSizes are the sizes the resize crash helper cycles through:
// L1 growth past a cluster (4 KiB clusters), shrinks that drop L2 tables
// and cut the file, unaligned ends.
var resizeCrashSizes = []int64{2 << 20, 700 << 20, 3<<20 + 512, 64 << 20, 1<<20 + 8192, 1500 << 20}

// resizeCrashHelper runs in the child: it fills the first MiB with a
// pattern, flushes, announces "F", then cycles through resizes, writing
// a cluster just below each new end; each resize is announced ("R size")
// before it starts.
func resizeCrashHelper(path string) int {
	fd, err := openFileDev(path, false)
	if err != nil {
		fmt.Println("E", err)
		return 1
	}
	img, err := Open(fd, OpenOptions{})
	if err != nil {
		fmt.Println("E", err)
		return 1
	}
	head := make([]byte, 1<<20)
	fillPattern(head, 1, 0)
	if err := img.WriteAt(head, 0, 0); err != nil || img.Flush() != nil {
		fmt.Println("E", err)
		return 1
	}
	fmt.Println("F")
	buf := make([]byte, 4096)
	for i := 0; ; i++ {
		size := resizeCrashSizes[i%len(resizeCrashSizes)]
		fmt.Println("R", size)
		if err := img.Truncate(size); err != nil {
			fmt.Println("E", err)
			return 1
		}
		fillPattern(buf, int64(i+2), size-4096)
		if err := img.WriteAt(buf, size-4096, 0); err != nil {
			fmt.Println("E", err)
			return 1
		}
	}
}

// TestResizeCrash kills the engine while it grows and shrinks an image:
// qemu-img check must find no corruption (leaks are allowed), the size
// must be the one before or after the resize in progress, and the data
// flushed before the resizes must be intact.
func TestResizeCrash(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	deadline := time.Now().Add(crashBudget() / 2)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for round := 0; round == 0 || time.Now().Before(deadline); round++ {
		path := filepath.Join(dir, fmt.Sprintf("resize%d.qcow2", round))
		newImageFile(t, path, CreateOptions{Size: 2 << 20, ClusterSize: 4096})
		ls := runCrashHelper(t, "resize "+path, time.Duration(50+rng.Intn(300))*time.Millisecond)
		flushed := false
		allowed := map[int64]bool{}
		last := int64(2 << 20)
		allowed[last] = true
		for _, l := range ls {
			f := strings.Fields(l)
			switch {
			case f[0] == "E":
				t.Fatalf("helper failed: %s", l)
			case f[0] == "F":
				flushed = true
			case f[0] == "R":
				n, _ := strconv.ParseInt(f[1], 10, 64)
				allowed = map[int64]bool{last: true, n: true}
				last = n
			}
		}
		t.Logf("round %d: killed after %d resizes", round, len(ls)-1)
		if c := qemuImgCheck(t, path); c.Corruptions != 0 || c.CheckErrors != 0 {
			t.Fatalf("round %d: qemu-img check after a kill during resize: %s", round, c.Out)
		}
		img, fd := openImage(t, path, OpenOptions{ReadOnly: true})
		size, _ := img.Size()
		if !allowed[size] {
			t.Fatalf("round %d: size %d after the kill, want one of %v", round, size, allowed)
		}
		if flushed {
			got := make([]byte, 1<<20)
			if err := img.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, 1<<20)
			fillPattern(want, 1, 0)
			if !bytes.Equal(got, want) {
				t.Fatalf("round %d: flushed data lost: %s", round, firstDiff(got, want))
			}
		}
		img.Close()
		fd.Close()
	}
}
