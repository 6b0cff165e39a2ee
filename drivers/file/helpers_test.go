package file

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"blockd/blockio"
)

const (
	permQcow2Parent   = blockio.PermConsistentRead | blockio.PermWrite | blockio.PermResize
	sharedQcow2Parent = blockio.PermConsistentRead | blockio.PermWriteUnchanged
)

// newImage creates a file of size bytes (sparse) in dir.
func newImage(t testing.TB, dir string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, "img")
	fh, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := fh.Truncate(size); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	return p
}

// mustOpen opens a File that is closed at the end of the test.
func mustOpen(t testing.TB, o Options) *File {
	t.Helper()
	f, err := Open(o)
	if err != nil {
		t.Fatalf("Open(%+v): %v", o, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// directDir returns a directory whose file system takes O_DIRECT, or
// skips the test loudly (tmpfs on older kernels rejects it).
func directDir(t *testing.T) string {
	t.Helper()
	candidates := []string{t.TempDir()}
	if d, err := os.MkdirTemp("/var/tmp", "blockd-file-test-"); err == nil {
		t.Cleanup(func() { os.RemoveAll(d) })
		candidates = append(candidates, d)
	}
	for _, d := range candidates {
		p := filepath.Join(d, "probe")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			continue
		}
		fd, err := syscall.Open(p, syscall.O_RDWR|syscall.O_DIRECT|syscall.O_CLOEXEC, 0)
		os.Remove(p)
		if err == nil {
			syscall.Close(fd)
			return d
		}
	}
	t.Skipf("SKIP LOUDLY: no directory among %v supports O_DIRECT; O_DIRECT paths untested", candidates)
	return ""
}

// qemuTool finds a QEMU binary or skips (fails with BLOCKD_REQUIRE_QEMU=1).
func qemuTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("BLOCKD_REQUIRE_QEMU") == "1" {
			t.Fatalf("%s not found and BLOCKD_REQUIRE_QEMU=1: %v", name, err)
		}
		t.Skipf("SKIP LOUDLY: %s not installed; QEMU interop untested (set BLOCKD_REQUIRE_QEMU=1 to fail instead)", name)
	}
	return p
}

// run runs a command and returns its combined output and success.
func run(t *testing.T, name string, args ...string) (string, bool) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err == nil
}

// heldBytes reports which lock bytes other open file descriptions hold
// on path, as QEMU would see them: bit i of perm for byte 100+i, bit i
// of unshared for byte 200+i.
func heldBytes(t testing.TB, path string) lockBytes {
	t.Helper()
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	lk := pickLockCmds()
	var lb lockBytes
	for i := range len(lockPermNames) {
		if lk.testByte(fd, lockPermBase+int64(i)) != 0 {
			lb.perm |= 1 << i
		}
		if lk.testByte(fd, lockSharedBase+int64(i)) != 0 {
			lb.unshared |= 1 << i
		}
	}
	return lb
}

func wantHeld(t testing.TB, path string, want lockBytes) {
	t.Helper()
	if got := heldBytes(t, path); got != want {
		t.Fatalf("lock bytes held: perm [%v] unshared [%v], want perm [%v] unshared [%v]",
			got.perm, got.unshared, want.perm, want.unshared)
	}
}

func wantErrText(t testing.TB, err error, text string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %q", text)
	}
	if err.Error() != text {
		t.Fatalf("error %q, want %q", err.Error(), text)
	}
}

func wantLocked(t testing.TB, err error, text string) {
	t.Helper()
	wantErrText(t, err, text)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("error %q does not match ErrLocked", err)
	}
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func mustRead(t testing.TB, f *File, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := f.ReadAt(b, off); err != nil {
		t.Fatalf("ReadAt(%d, %d): %v", off, n, err)
	}
	return b
}

func wantData(t testing.TB, f *File, off int64, want []byte) {
	t.Helper()
	if got := mustRead(t, f, off, len(want)); !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == want[i] {
			i++
		}
		t.Fatalf("data at %d differs first at +%d: got %#x want %#x", off, i, got[i], want[i])
	}
}

func fileFlags(t testing.TB, f *File) int {
	t.Helper()
	f.mu.RLock()
	defer f.mu.RUnlock()
	fl, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(f.h.fd), syscall.F_GETFL, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	return int(fl)
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
