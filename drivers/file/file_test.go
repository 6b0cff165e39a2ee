package file

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"blockd/blockio"
)

// Texts verified against qemu-storage-daemon 7.2 (blockdev-add desc).
func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nonexistent")
	cases := []struct {
		name  string
		o     Options
		text  string
		errno syscall.Errno
	}{
		{"missing", Options{Filename: missing},
			"Could not open '" + missing + "': No such file or directory", syscall.ENOENT},
		{"directory rw", Options{Filename: dir},
			"Could not open '" + dir + "': Is a directory", syscall.EISDIR},
		{"directory ro", Options{Filename: dir, ReadOnly: true},
			"'file' driver requires '" + dir + "' to be a regular file", syscall.EINVAL},
		{"not seekable", Options{Filename: "/proc/version", ReadOnly: true},
			"Could not refresh total sector count: Invalid argument", syscall.EINVAL},
		{"o_direct unsupported", Options{Filename: "/proc/version", ReadOnly: true, Direct: true},
			"Could not open '/proc/version': filesystem does not support O_DIRECT", syscall.EINVAL},
		{"not a directory", Options{Filename: filepath.Join(dir, "missing", "x")},
			"Could not open '" + filepath.Join(dir, "missing", "x") + "': No such file or directory", syscall.ENOENT},
		{"no filename", Options{},
			"The 'file' block driver requires a file name", 0},
		{"bad locking", Options{Filename: missing, Locking: "bogus"},
			"Parameter 'locking' does not accept value 'bogus'", syscall.EINVAL},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Open(c.o)
			if err == nil {
				f.Close()
			}
			wantErrText(t, err, c.text)
			if c.errno != 0 && !errors.Is(err, c.errno) {
				t.Fatalf("error %v does not unwrap to %v", err, c.errno)
			}
		})
	}
}

func TestOpenPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root, which may open read-only files for writing; " +
			"QSD 7.2's text \"Could not open '<path>': Permission denied\" is produced by the same path as ENOENT")
	}
	p := newImage(t, t.TempDir(), 4096)
	os.Chmod(p, 0o444)
	_, err := Open(Options{Filename: p})
	wantErrText(t, err, "Could not open '"+p+"': Permission denied")
	f := mustOpen(t, Options{Filename: p, ReadOnly: true})
	mustRead(t, f, 0, 512)
	// auto-read-only opens read-only and only fails when a writer comes.
	g := mustOpen(t, Options{Filename: p, AutoReadOnly: true})
	wantErrText(t, g.SetPerm(blockio.PermConsistentRead|blockio.PermWrite, blockio.PermAll),
		"Could not open '"+p+"': Permission denied")
}

func TestBadInput(t *testing.T) {
	f := mustOpen(t, Options{Filename: newImage(t, t.TempDir(), 1<<20)})
	buf := make([]byte, 512)
	const maxInt = int64(^uint64(0) >> 1)
	checks := map[string]error{
		"read negative":     f.ReadAt(buf, -1),
		"write negative":    f.WriteAt(buf, -512, 0),
		"write overflow":    f.WriteAt(buf, maxInt-10, 0),
		"zeroes negative":   f.WriteZeroes(0, -1, 0),
		"zeroes overflow":   f.WriteZeroes(maxInt, 2, 0),
		"discard negative":  f.Discard(-1, 10),
		"status past EOF":   statusErr(f, 1<<20, 512),
		"status negative":   statusErr(f, -1, 512),
		"status zero bytes": statusErr(f, 0, 0),
	}
	for name, err := range checks {
		if !errors.Is(err, blockio.ErrOutOfRange) {
			t.Errorf("%s: got %v, want ErrOutOfRange", name, err)
		}
	}
	wantErrText(t, f.Truncate(-1), "Image size cannot be negative")
	if err := f.ReadAt(nil, 0); err != nil {
		t.Errorf("empty read: %v", err)
	}

	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for name, err := range map[string]error{
		"read":      f.ReadAt(buf, 0),
		"write":     f.WriteAt(buf, 0, 0),
		"flush":     f.Flush(),
		"status":    statusErr(f, 0, 512),
		"truncate":  f.Truncate(0),
		"checkperm": f.CheckPerm(blockio.PermConsistentRead, blockio.PermAll),
	} {
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("%s after Close: got %v, want os.ErrClosed", name, err)
		}
	}
	if _, err := f.Size(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Size after Close: %v", err)
	}
	f.AbortPerm() // must not panic
}

func statusErr(f *File, off, n int64) error {
	_, err := f.BlockStatus(off, n)
	return err
}

func TestReadOnly(t *testing.T) {
	p := newImage(t, t.TempDir(), 1<<20)
	f := mustOpen(t, Options{Filename: p, ReadOnly: true, DiscardUnmap: true})
	buf := make([]byte, 4096)
	for name, err := range map[string]error{
		"write":   f.WriteAt(buf, 0, 0),
		"zeroes":  f.WriteZeroes(0, 4096, 0),
		"discard": f.Discard(0, 4096),
	} {
		if !errors.Is(err, blockio.ErrReadOnly) {
			t.Errorf("%s: got %v, want ErrReadOnly", name, err)
		}
	}
	err := f.Truncate(0)
	wantErrText(t, err, "Image is read-only")
	if !errors.Is(err, blockio.ErrReadOnly) {
		t.Errorf("truncate error does not match ErrReadOnly")
	}
	if fileFlags(t, f)&syscall.O_ACCMODE != syscall.O_RDONLY {
		t.Errorf("read-only file not opened O_RDONLY")
	}
	mustRead(t, f, 0, 4096)
}
