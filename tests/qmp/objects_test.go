package qmptest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// --object creates objects at start-up, in keyval form (qom-type implied
// by the first element) or as JSON; refusals print qemu-storage-daemon's
// texts, checked against the reference itself when it is installed.
func TestObjectOnCommandLine(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := StartDaemon(t, blockdBin, dir,
		"--object", "secret,id=s0,data=abc",
		"--object", "secret,id=s1,file=key,format=raw",
		"--object", `{"qom-type": "authz-simple", "id": "a0", "identity": "CN=x,O=y"}`,
		"--object", "iothread,id=io0,poll-max-ns=0")
	c := Dial(t, d.Sock)
	negotiate(t, c)
	for _, id := range []string{"s0", "s1", "a0", "io0"} {
		r, _ := c.Command(t, "object-add", map[string]any{"qom-type": "secret", "id": id, "data": "x"})
		want := "attempt to add duplicate property '" + id + "' to object (type 'container')"
		if e, _ := r["error"].(map[string]any); e == nil || e["desc"] != want {
			t.Errorf("%s should exist after --object: %v", id, r)
		}
		if r, _ := c.Command(t, "object-del", map[string]any{"id": id}); r["error"] != nil {
			t.Errorf("object-del %s: %v", id, r)
		}
	}
	c.Close()
	d.Stop(t)

	ref := referenceDaemon(t)
	for _, c := range []struct{ spec, want string }{
		{"secret,id=s", "Either 'file' or 'data' must be provided"},
		{"secret,id=s,data=x,bogus=1", "Parameter 'bogus' is unexpected"},
		{"foo,id=x", "Parameter 'qom-type' does not accept value 'foo'"},
		{`{"qom-type":"secret","id":"s"}`, "Either 'file' or 'data' must be provided"},
		{"iothread,id=io0,poll-max-ns=abc", "Parameter 'poll-max-ns' expects integer"},
		{"secret,id=9,data=x", "Parameter 'id' expects an identifier\nIdentifiers consist of letters, digits, '-', '.', '_', starting with a letter."},
		{"tls-creds-x509,id=t,dir=nodir,endpoint=server", "Unable to access credentials nodir/ca-cert.pem: No such file or directory"},
	} {
		args := []string{"--object", c.spec}
		out, err := exec.Command(blockdBin, append(args, "--socket", filepath.Join(dir, "x.sock"))...).CombinedOutput()
		var ee *exec.ExitError
		if !asExit(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("%s: want exit 1, got %v", c.spec, err)
		}
		want := "blockd: --object " + c.spec + ": " + c.want
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("--object %s:\n got  %q\n want %q", c.spec, got, want)
		}
		if ref == "" {
			continue
		}
		cmd := exec.Command(ref, args...)
		cmd.Dir = dir
		out, _ = cmd.CombinedOutput()
		if got := strings.TrimSpace(string(out)); got != "qemu-storage-daemon: --object "+c.spec+": "+c.want {
			t.Errorf("the reference says %q for --object %s, this test expects %q", got, c.spec, c.want)
		}
	}
}
