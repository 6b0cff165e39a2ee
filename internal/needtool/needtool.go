// Package needtool owns the rule every interop test follows for the
// external tools it drives (qemu-img, qemu-storage-daemon, fusermount3,
// ...): skip loudly when one is missing, fail instead when
// BLOCKD_REQUIRE_QEMU=1, as CI sets it.
package needtool

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Find returns the path of each named tool, in order, or skips (fails
// under BLOCKD_REQUIRE_QEMU=1) on the first one that is missing.
func Find(t testing.TB, names ...string) []string {
	t.Helper()
	paths := make([]string, len(names))
	for i, name := range names {
		p, err := exec.LookPath(name)
		if err != nil {
			Missing(t, fmt.Sprintf("%s not installed", name))
		}
		paths[i] = p
	}
	return paths
}

// Missing skips t loudly because of what (a tool, a device), or fails it
// when BLOCKD_REQUIRE_QEMU=1.
func Missing(t testing.TB, what string) {
	t.Helper()
	msg := fmt.Sprintf("%s: INTEROP TEST %s NOT RUN (set BLOCKD_REQUIRE_QEMU=1 to fail instead)", what, t.Name())
	if os.Getenv("BLOCKD_REQUIRE_QEMU") == "1" {
		t.Fatal(msg)
	}
	fmt.Fprintln(os.Stderr, "*** WARNING: SKIP:", msg)
	t.Skip(msg)
}
