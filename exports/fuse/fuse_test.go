package fuse

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"blockd/blockio"
	"blockd/drivers/file"
	"blockd/drivers/qcow2"
	"blockd/internal/needtool"
	"blockd/internal/racechild"
)

// requireFuse skips loudly (fails under BLOCKD_REQUIRE_QEMU=1) without a
// usable /dev/fuse and fusermount3.
func requireFuse(t *testing.T) {
	t.Helper()
	needtool.Find(t, "fusermount3")
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		needtool.Missing(t, fmt.Sprintf("/dev/fuse unusable (%v)", err))
	}
	f.Close()
}

// run runs a tool and fails the test if it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// runFails runs a tool that must fail and returns its output.
func runFails(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err == nil {
		t.Fatalf("%s %s succeeded, want failure\n%s", name, strings.Join(args, " "), out)
	}
	return string(out)
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// mountpoint creates the empty regular file an export is mounted over.
func mountpoint(t *testing.T, dir string) string {
	mp := filepath.Join(dir, "mp")
	writeFile(t, mp, nil)
	return mp
}

// mount mounts dev and unmounts it at the end of the test.
func mount(t *testing.T, dev blockio.Device, o Options) *Export {
	t.Helper()
	e, err := Mount(dev, o)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() { _ = e.Unmount() })
	return e
}

func openFile(t *testing.T, path string, ro bool) *file.File {
	t.Helper()
	f, err := file.Open(file.Options{Filename: path, ReadOnly: ro, DiscardUnmap: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// checkContent compares the exported file with want, through the export.
func checkContent(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: content differs from the model (len %d, want %d)", path, len(got), len(want))
	}
}

func TestMountErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope")
	_, err := Mount(nil, Options{Mountpoint: missing})
	if want := fmt.Sprintf("Failed to stat '%s': No such file or directory", missing); err == nil || err.Error() != want {
		t.Fatalf("missing mountpoint: %v, want %q", err, want)
	}
	_, err = Mount(nil, Options{Mountpoint: dir})
	if want := fmt.Sprintf("'%s' is not a regular file", dir); err == nil || err.Error() != want {
		t.Fatalf("directory mountpoint: %v, want %q", err, want)
	}
	mp := mountpoint(t, dir)
	_, err = Mount(nil, Options{Mountpoint: mp, AllowOther: "maybe"})
	if err == nil || err.Error() != "Parameter 'allow-other' does not accept value 'maybe'" {
		t.Fatalf("bad allow-other: %v", err)
	}
}

// TestRawFile drives a writable export of a raw file with dd, cmp,
// fallocate and truncate, and checks the file underneath after each step.
func TestRawFile(t *testing.T) {
	requireFuse(t)
	needtool.Find(t, "dd", "cmp", "fallocate", "truncate")
	dir := t.TempDir()
	const size = 8 << 20
	model := randBytes(t, size)
	img := filepath.Join(dir, "disk.raw")
	writeFile(t, img, model)
	mp := mountpoint(t, dir)
	e := mount(t, openFile(t, img, false), Options{Mountpoint: mp, Writable: true, AllowOther: "off"})

	_, err := Mount(openFile(t, img, true), Options{Mountpoint: mp})
	if want := fmt.Sprintf("There already is a FUSE export on '%s'", mp); err == nil || err.Error() != want {
		t.Fatalf("second export on the same mountpoint: %v, want %q", err, want)
	}

	var st syscall.Stat_t
	if err := syscall.Stat(mp, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode != syscall.S_IFREG|0o600 || st.Size != size || st.Nlink != 1 {
		t.Fatalf("stat: mode %o size %d nlink %d", st.Mode, st.Size, st.Nlink)
	}
	run(t, "cmp", mp, img)

	// dd a random block into the middle, bypassing nothing: the page
	// cache of the export is written through to the device.
	src := filepath.Join(dir, "src")
	chunk := randBytes(t, 1<<20)
	writeFile(t, src, chunk)
	run(t, "dd", "if="+src, "of="+mp, "bs=64k", "seek=48", "conv=notrunc,fsync", "status=none")
	copy(model[48*64<<10:], chunk)
	checkContent(t, mp, model)
	checkContent(t, img, model)

	// Punch a hole and zero a range: both read back as zeroes, through
	// the export and in the file.
	run(t, "fallocate", "-p", "-o", "1M", "-l", "256K", mp)
	clear(model[1<<20 : 1<<20+256<<10])
	run(t, "fallocate", "-z", "-o", "5M", "-l", "300K", mp)
	clear(model[5<<20 : 5<<20+300<<10])
	checkContent(t, mp, model)
	checkContent(t, img, model)
	// Plain allocation inside the file is not supported (only at EOF).
	if out := runFails(t, "fallocate", "-o", "0", "-l", "64K", mp); !strings.Contains(out, "Operation not supported") {
		t.Fatalf("fallocate inside: %s", out)
	}

	// A write across the end of a non-growable export is clipped, one
	// starting at the end fails.
	runFails(t, "dd", "if="+src, "of="+mp, "bs=1M", "seek=8", "conv=notrunc", "status=none")
	checkContent(t, mp, model)

	// Writable exports may be resized (truncate), growing with zeroes.
	run(t, "truncate", "-s", "12M", mp)
	model = append(model, make([]byte, 4<<20)...)
	checkContent(t, mp, model)
	checkContent(t, img, model)
	run(t, "truncate", "-s", "6M", mp)
	model = model[:6<<20]
	checkContent(t, img, model)
	// fallocate at the end grows the file.
	run(t, "fallocate", "-o", "6M", "-l", "1M", mp)
	model = append(model, make([]byte, 1<<20)...)
	checkContent(t, img, model)
	// touch (set times) is not supported, as with the reference.
	runFails(t, "touch", mp)

	if err := e.Unmount(); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if err := e.Unmount(); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}
	if err := syscall.Stat(mp, &st); err != nil || st.Size != 0 {
		t.Fatalf("after unmount the mountpoint should be the empty file again: %v size %d", err, st.Size)
	}
	// The mountpoint is free again.
	e2 := mount(t, openFile(t, img, true), Options{Mountpoint: mp})
	checkContent(t, mp, model)
	if err := e2.Unmount(); err != nil {
		t.Fatal(err)
	}
}

// TestQcow2 exports a qcow2 image through blockd's engine, writes to it
// with real tools, unmounts, and has qemu-img check and compare it.
func TestQcow2(t *testing.T) {
	requireFuse(t)
	needtool.Find(t, "dd", "fallocate", "truncate", "qemu-img")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "16M")
	f := openFile(t, img, false)
	q, err := qcow2.Open(f, qcow2.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mp := mountpoint(t, dir)
	e := mount(t, q, Options{Mountpoint: mp, Writable: true, Growable: true})

	model := make([]byte, 16<<20)
	src := filepath.Join(dir, "src")
	data := randBytes(t, 3<<20)
	writeFile(t, src, data)
	run(t, "dd", "if="+src, "of="+mp, "bs=1M", "seek=2", "conv=notrunc,fsync", "status=none")
	copy(model[2<<20:], data)
	// Cluster-aligned punch (qcow2 discards whole clusters) and an
	// unaligned zero range.
	run(t, "fallocate", "-p", "-o", "2M", "-l", "128K", mp)
	clear(model[2<<20 : 2<<20+128<<10])
	run(t, "fallocate", "-z", "-o", "3000000", "-l", "100000", mp)
	clear(model[3000000:3100000])
	checkContent(t, mp, model)

	// Growable: a write past the end grows the image.
	run(t, "dd", "if="+src, "of="+mp, "bs=1M", "count=1", "seek=16", "conv=notrunc,fsync", "status=none")
	model = append(model, data[:1<<20]...)
	run(t, "truncate", "-s", "20M", mp)
	model = append(model, make([]byte, 3<<20)...)
	checkContent(t, mp, model)

	if err := e.Unmount(); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	var check struct {
		Corruptions, Leaks int
		CheckErrors        int `json:"check-errors"`
	}
	out, _ := exec.Command("qemu-img", "check", "--output=json", img).Output()
	if err := json.Unmarshal(out, &check); err != nil || check.Corruptions+check.Leaks+check.CheckErrors != 0 {
		t.Fatalf("qemu-img check: %v %s", err, out)
	}
	want := filepath.Join(dir, "model.raw")
	writeFile(t, want, model)
	run(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", img, want)
}

// TestReadOnly: a read-only export refuses every kind of write with the
// reference's errno and leaves the image alone.
func TestReadOnly(t *testing.T) {
	requireFuse(t)
	needtool.Find(t, "dd", "fallocate", "truncate", "chmod")
	dir := t.TempDir()
	model := randBytes(t, 1<<20)
	img := filepath.Join(dir, "disk.raw")
	writeFile(t, img, model)
	mp := mountpoint(t, dir)
	mount(t, openFile(t, img, true), Options{Mountpoint: mp, Growable: true})

	var st syscall.Stat_t
	if err := syscall.Stat(mp, &st); err != nil || st.Mode != syscall.S_IFREG|0o400 {
		t.Fatalf("stat: %v mode %o", err, st.Mode)
	}
	// The writes themselves are refused (root passes the mode check at
	// open), as are resizes, allocation and +w.
	f, err := os.OpenFile(mp, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("write: %v, want EACCES", err)
	}
	f.Close()
	if err := os.Truncate(mp, 4096); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("truncate: %v, want EACCES", err)
	}
	if out := runFails(t, "fallocate", "-z", "-o", "0", "-l", "4096", mp); !strings.Contains(out, "Permission denied") {
		t.Fatalf("fallocate: %s", out)
	}
	if err := os.Chmod(mp, 0o600); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("chmod +w: %v, want EROFS", err)
	}
	if err := os.Chmod(mp, 0o440); err != nil { // no +w: allowed
		t.Fatalf("chmod 0440: %v", err)
	}
	checkContent(t, mp, model)
	checkContent(t, img, model)
}

// TestUnmountWithOpenReader: clients still reading do not keep Unmount
// from returning; they get errors afterwards and the device is no longer
// touched.
func TestUnmountWithOpenReader(t *testing.T) {
	requireFuse(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.raw")
	writeFile(t, img, randBytes(t, 4<<20))
	mp := mountpoint(t, dir)
	e := mount(t, openFile(t, img, true), Options{Mountpoint: mp})

	f, err := os.Open(mp)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	started := make(chan struct{})
	readerErr := make(chan error, 1)
	go func() {
		// O_DIRECT is not used by FUSE page-cache files; drop caches by
		// reading ever new offsets so that requests reach the export.
		buf := make([]byte, 64<<10)
		once := sync.Once{}
		for i := 0; ; i++ {
			_, err := f.ReadAt(buf, int64(i%64)*int64(len(buf)))
			once.Do(func() { close(started) })
			if err != nil {
				readerErr <- err
				return
			}
			if i%64 == 63 {
				_ = fadviseDontNeed(f)
			}
		}
	}()
	<-started
	if err := e.Unmount(); err != nil {
		t.Fatalf("Unmount with an open reader: %v", err)
	}
	// The mountpoint is the plain file again for new opens.
	var st syscall.Stat_t
	if err := syscall.Stat(mp, &st); err != nil || st.Size != 0 {
		t.Fatalf("mountpoint after unmount: %v size %d", err, st.Size)
	}
	// The reader's next uncached request fails.
	if err := <-readerErr; err == nil {
		t.Fatal("reader saw no error")
	}
}

func fadviseDontNeed(f *os.File) error {
	const posixFadvDontneed = 4
	_, _, e := syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, posixFadvDontneed, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// TestConcurrentClients: several clients write and read disjoint ranges
// at once through the export (run with -race).
func TestConcurrentClients(t *testing.T) {
	requireFuse(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	needtool.Find(t, "qemu-img")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "8M")
	f := openFile(t, img, false)
	q, err := qcow2.Open(f, qcow2.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	mp := mountpoint(t, dir)
	mount(t, q, Options{Mountpoint: mp, Writable: true})

	const workers, span = 4, 2 << 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			fd, err := os.OpenFile(mp, os.O_RDWR, 0)
			if err != nil {
				errs <- err
				return
			}
			defer fd.Close()
			data := make([]byte, span)
			for i := range data {
				data[i] = byte(w*37 + i)
			}
			if _, err := fd.WriteAt(data, int64(w)*span); err != nil {
				errs <- err
				return
			}
			if err := fd.Sync(); err != nil {
				errs <- err
				return
			}
			got := make([]byte, span)
			if _, err := fd.ReadAt(got, int64(w)*span); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, data) {
				errs <- fmt.Errorf("worker %d read back other data", w)
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestMain lets the test binary act as a process that serves an export
// until SIGTERM, as the daemon does (see TestSigterm).
func TestMain(m *testing.M) {
	if spec := os.Getenv("BLOCKD_FUSE_HELPER"); spec != "" {
		os.Exit(sigtermHelper(spec))
	}
	racechild.NoExitSleep()
	os.Exit(m.Run())
}

func sigtermHelper(spec string) int {
	img, mp, _ := strings.Cut(spec, ",")
	f, err := file.Open(file.Options{Filename: img, ReadOnly: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	e, err := Mount(f, Options{Mountpoint: mp})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	<-sigs
	if err := e.Unmount(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestSigterm: a process serving an export that gets SIGTERM while a
// client keeps reading unmounts and exits; the mountpoint is the plain
// file again.
func TestSigterm(t *testing.T) {
	requireFuse(t)
	needtool.Find(t, "dd")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.raw")
	writeFile(t, img, randBytes(t, 8<<20))
	mp := mountpoint(t, dir)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "BLOCKD_FUSE_HELPER="+img+","+mp)
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 6)
	if _, err := io.ReadFull(stdout, line); err != nil || string(line) != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper did not mount: %v %q %s", err, line, stderr.String())
	}
	// A client with the file open, reading uncached data in a loop.
	marker := filepath.Join(dir, "reading")
	reader := exec.Command("sh", "-c", "dd if=\"$0\" of=/dev/null bs=64k iflag=direct status=none && touch \"$1\" && "+
		"while dd if=\"$0\" of=/dev/null bs=64k iflag=direct status=none; do :; done", mp, marker)
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { reader.Process.Kill(); reader.Wait() }()
	for i := 0; ; i++ {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if i == 1000 {
			t.Fatal("the reader never got through one pass")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper after SIGTERM: %v\n%s", err, stderr.String())
	}
	var st syscall.Stat_t
	if err := syscall.Stat(mp, &st); err != nil || st.Size != 0 {
		t.Fatalf("mountpoint after SIGTERM: %v size %d", err, st.Size)
	}
}

// TestSeekDataHole: SEEK_DATA/SEEK_HOLE follow the qcow2 image's
// allocation.
func TestSeekDataHole(t *testing.T) {
	requireFuse(t)
	needtool.Find(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "16M")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 2M 3M", "-c", "write -P 0x5b 12M 64k", img)
	f := openFile(t, img, true)
	q, err := qcow2.Open(f, qcow2.OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	mp := mountpoint(t, dir)
	mount(t, q, Options{Mountpoint: mp})
	fd, err := os.Open(mp)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	const seekData, seekHole = 3, 4
	for _, c := range []struct {
		off    int64
		whence int
		want   int64
	}{
		{0, seekData, 2 << 20}, {2 << 20, seekHole, 5 << 20}, {5 << 20, seekData, 12 << 20},
		{12 << 20, seekHole, 12<<20 + 64<<10}, {13 << 20, seekHole, 13 << 20}, {0, seekHole, 0},
		{16 << 20, seekHole, 16 << 20},
	} {
		got, err := syscall.Seek(int(fd.Fd()), c.off, c.whence)
		if err != nil || got != c.want {
			t.Errorf("lseek(%d, %d) = %d, %v; want %d", c.off, c.whence, got, err, c.want)
		}
	}
	if _, err := syscall.Seek(int(fd.Fd()), 13<<20, seekData); err != syscall.ENXIO {
		t.Errorf("SEEK_DATA after the last data: %v, want ENXIO", err)
	}
}

// TestAllowOther: "on" and "off" mount with and without allow_other;
// "auto" uses it when the process may (root may).
func TestAllowOther(t *testing.T) {
	requireFuse(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.raw")
	writeFile(t, img, make([]byte, 1<<20))
	mp := mountpoint(t, dir)
	for _, c := range []struct {
		mode string
		want bool
	}{{"off", false}, {"on", true}, {"auto", os.Geteuid() == 0}} {
		e, err := Mount(openFile(t, img, true), Options{Mountpoint: mp, AllowOther: c.mode})
		if err != nil {
			if c.mode == "on" && os.Geteuid() != 0 {
				continue // needs user_allow_other in /etc/fuse.conf
			}
			t.Fatalf("allow-other=%s: %v", c.mode, err)
		}
		got := mountHasOption(t, mp, "allow_other")
		if err := e.Unmount(); err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("allow-other=%s: mounted with allow_other %v, want %v", c.mode, got, c.want)
		}
	}
}

// mountHasOption looks for a super-block option of the mount on path in
// /proc/self/mountinfo.
func mountHasOption(t *testing.T, path, opt string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[4] != path {
			continue
		}
		for _, o := range strings.Split(f[len(f)-1], ",") {
			if o == opt {
				return true
			}
		}
		return false
	}
	t.Fatalf("%s is not mounted", path)
	return false
}

// TestOddRequests: requests at the edges get the reference's answers and
// leave the image consistent.
func TestOddRequests(t *testing.T) {
	requireFuse(t)
	needtool.Find(t, "qemu-img")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "4M")
	f := openFile(t, img, false)
	q, err := qcow2.Open(f, qcow2.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mp := mountpoint(t, dir)
	e := mount(t, q, Options{Mountpoint: mp, Writable: true, Growable: true})
	fd, err := os.OpenFile(mp, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	const (
		keepSize      = 0x01
		collapseRange = 0x08
		zeroRange     = 0x10
	)
	size := func() int64 {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(fd.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		return st.Size
	}
	if err := syscall.Fallocate(int(fd.Fd()), collapseRange, 0, 64<<10); err != syscall.EOPNOTSUPP {
		t.Errorf("collapse range: %v, want EOPNOTSUPP", err)
	}
	// Zero range with keep-size past the end changes nothing.
	if err := syscall.Fallocate(int(fd.Fd()), zeroRange|keepSize, 4<<20, 1<<20); err != nil || size() != 4<<20 {
		t.Errorf("zero range, keep size, past the end: %v, size %d", err, size())
	}
	// Without keep-size it grows the image.
	if err := syscall.Fallocate(int(fd.Fd()), zeroRange, 4<<20, 1<<20); err != nil || size() != 5<<20 {
		t.Errorf("zero range past the end: %v, size %d", err, size())
	}
	// A read far past the end returns nothing.
	if n, err := fd.ReadAt(make([]byte, 4096), 1<<40); n != 0 || err == nil {
		t.Errorf("read past the end: %d, %v", n, err)
	}
	// A write beyond what qcow2 can address fails and grows nothing.
	if _, err := fd.WriteAt([]byte("x"), 1<<62); err == nil {
		t.Error("write at 2^62 succeeded")
	}
	if size() != 5<<20 {
		t.Errorf("size after the refused write: %d", size())
	}
	// An unaligned growth is refused by qcow2 (sizes are sector
	// multiples); the image keeps its size.
	if _, err := fd.WriteAt([]byte("x"), 5<<20); err == nil {
		t.Error("unaligned growth succeeded")
	}
	fd.Close()
	if err := e.Unmount(); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	run(t, "qemu-img", "check", "-q", img)
	if out := run(t, "qemu-img", "info", "--output=json", img); !strings.Contains(out, `"virtual-size": 5242880`) {
		t.Errorf("image size after the test: %s", out)
	}
}

// TestNoLeak: mounting and unmounting leaves no goroutine and no file
// descriptor behind (the /dev/fuse connection is closed).
func TestNoLeak(t *testing.T) {
	requireFuse(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.raw")
	writeFile(t, img, make([]byte, 1<<20))
	mp := mountpoint(t, dir)
	dev := openFile(t, img, false)
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	// One round first, so that lazily started runtime goroutines exist.
	for round := 0; round < 4; round++ {
		g0, f0 := runtime.NumGoroutine(), fds()
		e, err := Mount(dev, Options{Mountpoint: mp, Writable: true})
		if err != nil {
			t.Fatal(err)
		}
		run(t, "dd", "if=/dev/zero", "of="+mp, "bs=64k", "count=4", "conv=notrunc,fsync", "status=none")
		if err := e.Unmount(); err != nil {
			t.Fatal(err)
		}
		if round == 0 {
			continue
		}
		var g, f int
		for i := 0; i < 500; i++ { // the server's goroutines end just after the connection
			if g, f = runtime.NumGoroutine(), fds(); g <= g0 && f <= f0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if g > g0 || f > f0 {
			t.Fatalf("round %d: goroutines %d -> %d, fds %d -> %d", round, g0, g, f0, f)
		}
	}
}
