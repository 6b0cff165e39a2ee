package tools

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// result is what one tool run printed and returned.
type result struct {
	out, err string
	code     int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.out, r.err)
}

// img runs `blockd img args` in process.
func img(t testing.TB, args ...string) result {
	t.Helper()
	var o, e bytes.Buffer
	code := Img(args, Stdio{In: strings.NewReader(""), Out: &o, Err: &e})
	return result{o.String(), e.String(), code}
}

// bio runs `blockd io args` in process, with stdin.
func bio(t testing.TB, stdin string, args ...string) result {
	t.Helper()
	var o, e bytes.Buffer
	code := IO(args, Stdio{In: strings.NewReader(stdin), Out: &o, Err: &e})
	return result{o.String(), e.String(), code}
}

// mustImg runs `blockd img` and fails unless it exits 0.
func mustImg(t testing.TB, args ...string) string {
	t.Helper()
	r := img(t, args...)
	if r.code != 0 {
		t.Fatalf("blockd img %s: %s", strings.Join(args, " "), r)
	}
	return r.out
}

// mustIO runs `blockd io` -c commands and fails unless it exits 0.
func mustIO(t testing.TB, image string, cmds ...string) string {
	t.Helper()
	r := bio(t, "", ioArgs(image, cmds...)...)
	if r.code != 0 {
		t.Fatalf("blockd io %v: %s", cmds, r)
	}
	return r.out
}

func ioArgs(image string, cmds ...string) []string {
	var args []string
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	return append(args, image)
}

// requireQemu skips loudly without qemu-img and qemu-io, or fails with
// BLOCKD_REQUIRE_QEMU=1.
func requireQemu(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("%s not found: QEMU INTEROP TEST %s NOT RUN (set BLOCKD_REQUIRE_QEMU=1 to fail instead)", tool, t.Name())
			if os.Getenv("BLOCKD_REQUIRE_QEMU") == "1" {
				t.Fatal(msg)
			}
			fmt.Fprintln(os.Stderr, "*** WARNING:", msg)
			t.Skip(msg)
		}
	}
}

// qemuRun runs a QEMU tool in dir.
func qemuRun(dir, tool string, args ...string) result {
	cmd := exec.Command(tool, args...)
	cmd.Dir = dir
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		e.WriteString(err.Error())
	}
	return result{o.String(), e.String(), code}
}

// mustQemu runs a QEMU tool and fails unless it exits 0.
func mustQemu(t testing.TB, dir, tool string, args ...string) string {
	t.Helper()
	r := qemuRun(dir, tool, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: %s", tool, strings.Join(args, " "), r)
	}
	return r.out
}

// blockdBinary builds cmd/blockd once per test binary.
var blockdBin struct {
	once sync.Once
	path string
	err  error
	dir  string
}

func blockdBinary(t testing.TB) string {
	t.Helper()
	blockdBin.once.Do(func() {
		blockdBin.dir, blockdBin.err = os.MkdirTemp("", "blockd-tools-bin-")
		if blockdBin.err != nil {
			return
		}
		blockdBin.path = filepath.Join(blockdBin.dir, "blockd")
		out, err := exec.Command("go", "build", "-o", blockdBin.path, "blockd/cmd/blockd").CombinedOutput()
		if err != nil {
			blockdBin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if blockdBin.err != nil {
		t.Fatal(blockdBin.err)
	}
	return blockdBin.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if blockdBin.dir != "" {
		_ = os.RemoveAll(blockdBin.dir)
	}
	os.Exit(code)
}
