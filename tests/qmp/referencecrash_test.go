package qmptest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// A reference daemon that dies of a signal half way is run once more, and
// the test goes on as if it had not: the retry comparisons with
// qemu-storage-daemon rely on. The stand-in serves with the real daemon,
// then stops it and kills itself with SIGSEGV, the first time only.
func TestRetryReferenceCrash(t *testing.T) {
	qsd := qemuTool(t, "qemu-storage-daemon")
	dir := t.TempDir()
	marker := filepath.Join(dir, "crashed-once")
	fake := filepath.Join(dir, "crashing-qsd")
	script := fmt.Sprintf(`#!/bin/sh
if [ ! -e '%[1]s' ]; then
	: > '%[1]s'
	'%[2]s' "$@" &
	sleep 1
	kill $!
	wait $!
	kill -SEGV $$
fi
exec '%[2]s' "$@"
`, marker, qsd)
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var runs []string
	RetryReferenceCrash(t, func(ref *CrashAware) {
		d := StartDaemon(t, fake, t.TempDir())
		ref.D = d
		defer ref.StopUnlessCrashed(t, d)
		runs = append(runs, "started")
		c := Dial(ref, d.Sock)
		defer c.Close()
		negotiateReference(ref, c)
		if len(runs) == 1 {
			// The first daemon goes away within a second: nothing more
			// comes, and the failure to read is its crash.
			if _, raw, err := c.Next(); err != nil {
				ref.Fatalf("no event: %v (%q)", err, raw)
			}
			t.Fatalf("the stand-in daemon did not crash")
		}
		r, _ := c.Command(ref, "query-version", nil)
		if r["return"] == nil {
			t.Fatalf("query-version: %v", r)
		}
		runs[len(runs)-1] = "answered"
	})
	if fmt.Sprint(runs) != "[started answered]" {
		t.Fatalf("runs: %v, want a crashed one and one that answered", runs)
	}
}
