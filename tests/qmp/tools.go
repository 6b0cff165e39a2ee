package qmptest

import (
	"os"
	"os/exec"
	"testing"
)

// QemuTool finds a QEMU tool or skips the test loudly (fails instead with
// BLOCKD_REQUIRE_QEMU=1, as CI runs).
func QemuTool(t testing.TB, name string) string {
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
