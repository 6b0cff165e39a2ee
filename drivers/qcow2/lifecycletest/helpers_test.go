package lifecycletest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"blockd/blockio"
	"blockd/drivers/file"
	"blockd/drivers/qcow2"
)

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

func qemu(t testing.TB, tool string, args ...string) string {
	t.Helper()
	out, err := exec.Command(tool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func qemuIO(t testing.TB, img string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := qemu(t, "qemu-io", append(args, img)...)
	if strings.Contains(out, "failed") || strings.Contains(out, "error") {
		t.Fatalf("qemu-io %v: %s", cmds, out)
	}
}

// assertClean fails unless qemu-img check finds nothing at all.
func assertClean(t testing.TB, img string) {
	t.Helper()
	cmd := exec.Command("qemu-img", "check", "--output=json", "-f", "qcow2", img)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var c struct {
		Corruptions int `json:"corruptions"`
		Leaks       int `json:"leaks"`
		CheckErrors int `json:"check-errors"`
	}
	if jerr := json.Unmarshal(stdout.Bytes(), &c); err != nil || jerr != nil || c.Corruptions+c.Leaks+c.CheckErrors != 0 {
		t.Fatalf("qemu-img check %s: %v\n%s%s", img, err, stdout.String(), stderr.String())
	}
}

func qemuCompare(t testing.TB, a, fa, b, fb string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", "compare", "-f", fa, "-F", fb, a, b).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img compare %s %s: %v\n%s", a, b, err, out)
	}
}

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

// openImage opens an image with the engine on blockd's file driver,
// holding write and resize.
func openImage(t testing.TB, path string, o qcow2.OpenOptions) (*qcow2.Image, *file.File) {
	t.Helper()
	f, err := file.Open(file.Options{Filename: path})
	if err != nil {
		t.Fatal(err)
	}
	perm := blockio.PermConsistentRead | blockio.PermWrite | blockio.PermResize
	if err := f.CheckPerm(perm, blockio.PermAll); err != nil {
		t.Fatal(err)
	}
	if err := f.SetPerm(perm, blockio.PermAll); err != nil {
		t.Fatal(err)
	}
	img, err := qcow2.Open(f, o)
	if err != nil {
		f.Close()
		t.Fatalf("Open %s: %v", path, err)
	}
	return img, f
}

func clusterSize(t testing.TB, img *qcow2.Image) int64 { return img.Info().ClusterSize }

func roundUp(x, a int64) int64 { return (x + a - 1) / a * a }

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

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
