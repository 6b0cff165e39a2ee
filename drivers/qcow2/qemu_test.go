package qcow2

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Helpers driving qemu-img / qemu-io. Interop tests skip loudly without
// them, and fail instead when BLOCKD_REQUIRE_QEMU=1.

func requireQemu(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("%s not found: QEMU INTEROP TEST %s NOT RUN", tool, t.Name())
			if os.Getenv("BLOCKD_REQUIRE_QEMU") == "1" {
				t.Fatal(msg)
			}
			fmt.Fprintln(os.Stderr, "*** WARNING:", msg)
			t.Skip(msg)
		}
	}
}

// qemu runs a QEMU tool and fails the test on error.
func qemu(t testing.TB, tool string, args ...string) string {
	t.Helper()
	out, err := exec.Command(tool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// qemuIO runs qemu-io commands on a qcow2 image.
func qemuIO(t testing.TB, img string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	args = append(args, img)
	out := qemu(t, "qemu-io", args...)
	if strings.Contains(out, "failed") || strings.Contains(out, "error") {
		t.Fatalf("qemu-io %v: %s", cmds, out)
	}
}

type qemuCheck struct {
	Corruptions int `json:"corruptions"`
	Leaks       int `json:"leaks"`
	CheckErrors int `json:"check-errors"`
	Out         string
}

// qemuImgCheck runs qemu-img check; exit codes 2 and 3 (corruptions,
// leaks) are reported in the result rather than failing.
func qemuImgCheck(t testing.TB, img string) qemuCheck {
	t.Helper()
	cmd := exec.Command("qemu-img", "check", "--output=json", "-f", "qcow2", img)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() == 1 || ee.ExitCode() > 3) {
		t.Fatalf("qemu-img check %s: %v\n%s%s", img, err, stdout.String(), stderr.String())
	}
	var c qemuCheck
	if err := json.Unmarshal(stdout.Bytes(), &c); err != nil {
		t.Fatalf("qemu-img check output: %v\n%s", err, stdout.String())
	}
	c.Out = stdout.String() + stderr.String()
	return c
}

// assertClean fails unless qemu-img check finds nothing at all.
func assertClean(t testing.TB, img string) {
	t.Helper()
	c := qemuImgCheck(t, img)
	if c.Corruptions != 0 || c.Leaks != 0 || c.CheckErrors != 0 {
		t.Fatalf("qemu-img check %s: corruptions=%d leaks=%d errors=%d\n%s",
			img, c.Corruptions, c.Leaks, c.CheckErrors, c.Out)
	}
}

// qemuCompare fails unless the two images have the same content.
func qemuCompare(t testing.TB, a, fa, b, fb string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "compare", "-f", fa, "-F", fb, a, b).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img compare %s %s: %v\n%s", a, b, err, out)
	}
}

// toRaw converts an image (with its backing chain) to a raw file and
// returns its content.
func toRaw(t testing.TB, img string) []byte {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "conv.raw")
	qemu(t, "qemu-img", "convert", "-O", "raw", img, raw)
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openImage opens an image file with the engine.
func openImage(t testing.TB, path string, o OpenOptions) (*Image, *fileDev) {
	t.Helper()
	fd, err := openFileDev(path, o.ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Open(fd, o)
	if err != nil {
		fd.Close()
		t.Fatalf("Open %s: %v", path, err)
	}
	return img, fd
}

// openChain opens an image and its qcow2/raw backing chain read-only,
// following the header's backing file names (relative to the image's
// directory). It returns the top image and a function closing everything.
func openChain(t testing.TB, path string) (*Image, func()) {
	t.Helper()
	var closers []func()
	img, fd := openImage(t, path, OpenOptions{ReadOnly: true})
	closers = append(closers, func() { img.Close(); fd.Close() })
	cur := img
	dir := filepath.Dir(path)
	for {
		name, format := cur.BackingFile()
		if name == "" {
			break
		}
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		if format == "raw" {
			rd, err := openFileDev(name, true)
			if err != nil {
				t.Fatal(err)
			}
			closers = append(closers, func() { rd.Close() })
			cur.SetBacking(rd)
			break
		}
		b, bfd := openImage(t, name, OpenOptions{ReadOnly: true})
		closers = append(closers, func() { b.Close(); bfd.Close() })
		cur.SetBacking(b)
		cur = b
	}
	return img, func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
}

// readAll reads the whole guest disk.
func readAll(t testing.TB, img *Image) []byte {
	t.Helper()
	size, _ := img.Size()
	buf := make([]byte, size)
	if err := img.ReadAt(buf, 0); err != nil {
		t.Fatalf("ReadAt: %v", err)
	}
	return buf
}

// firstDiff describes where two buffers differ.
func firstDiff(a, b []byte) string {
	if len(a) != len(b) {
		return fmt.Sprintf("lengths %d and %d", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %d (%#x): %#x vs %#x", i, i, a[i], b[i])
		}
	}
	return "equal"
}
