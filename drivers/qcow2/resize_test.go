package qcow2

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestResizeAgainstQemu resizes copies of one image with the engine and
// with qemu-img resize through the same sizes (growing the L1 table past
// its first cluster, shrinking into and below written data, unaligned
// sizes) and checks after each step that both images hold the same data
// and pass qemu-img check without even a leak. One difference is
// deliberate (docs/differences.md): growing zeroes the rest of the old
// last cluster, where QEMU shows what a shrink left there; the QEMU copy
// gets those bytes zeroed by hand.
func TestResizeAgainstQemu(t *testing.T) {
	requireQemu(t)
	configs := []struct{ name, opts string }{
		{"default", "cluster_size=65536"},
		{"small-clusters-refcount1", "cluster_size=4096,refcount_bits=1"},
		{"extl2", "cluster_size=65536,extended_l2=on"},
		{"v2", "compat=0.10,cluster_size=4096"},
	}
	sizes := []int64{64 << 20, 3 << 20, 300 << 20, 9<<20 + 512, 512, 5 << 20}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			ours, theirs := filepath.Join(dir, "ours.qcow2"), filepath.Join(dir, "theirs.qcow2")
			qemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", c.opts, ours, "16M")
			qemuIO(t, ours, "write -P 0x11 0 1M", "write -P 0x22 4M 64k", "write -P 0x33 10M 3M",
				"write -z 14M 1M", "write -P 0x44 16380k 4k")
			copyFile(t, ours, theirs)
			old := int64(16 << 20)
			for _, size := range sizes {
				img, fd := openImage(t, ours, OpenOptions{})
				if err := img.Truncate(size); err != nil {
					t.Fatalf("Truncate(%d): %v", size, err)
				}
				if got, _ := img.Size(); got != size {
					t.Fatalf("Size after Truncate(%d) = %d", size, got)
				}
				if err := img.Close(); err != nil {
					t.Fatal(err)
				}
				fd.Close()
				qemu(t, "qemu-img", "resize", "-q", "--shrink", "-f", "qcow2", theirs, strconv.FormatInt(size, 10))
				if tail := roundUp(old, img.g.clusterSize); size > old && tail > old {
					qemuIO(t, theirs, fmt.Sprintf("write -z %d %d", old, min(tail, size)-old))
				}
				old = size
				assertClean(t, ours)
				qemuCompare(t, ours, "qcow2", theirs, "qcow2")
				// Data written after the resize lands in the right place.
				if size >= 2<<20 {
					qemuIO(t, ours, fmt.Sprintf("write -P 0x55 %d 64k", size-64<<10))
					qemuIO(t, theirs, fmt.Sprintf("write -P 0x55 %d 64k", size-64<<10))
				}
			}
		})
	}
}

// TestShrinkKeepsSnapshotData shrinks an image whose L2 tables and data
// are shared with an internal snapshot made by QEMU: the snapshot's data
// must survive (only the active layer's references go) and the image
// must stay clean.
func TestShrinkKeepsSnapshotData(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "s.qcow2")
	qemu(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "8M")
	qemuIO(t, p, "write -P 0x61 0 8M")
	qemu(t, "qemu-img", "snapshot", "-c", "before", p)
	img, fd := openImage(t, p, OpenOptions{})
	if err := img.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	fd.Close()
	assertClean(t, p)
	qemu(t, "qemu-img", "snapshot", "-a", "before", p)
	out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "read -P 0x61 0 8M", p).CombinedOutput()
	if err != nil || strings.Contains(string(out), "fail") {
		t.Fatalf("snapshot data after shrink: %v\n%s", err, out)
	}
	assertClean(t, p)
}

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
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnv+"=resize "+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan []string, 1)
		go func() {
			var ls []string
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				ls = append(ls, sc.Text())
			}
			lines <- ls
		}()
		time.Sleep(time.Duration(50+rng.Intn(300)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		ls := <-lines
		_ = cmd.Wait()
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
