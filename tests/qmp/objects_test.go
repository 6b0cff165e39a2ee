package qmptest

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blockd/internal/testpki"
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
	c.Negotiate(t)
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

// TLS through the daemon, end to end: --object tls-creds-x509 and
// authz-simple serve qemu-img over NBD with TLS (client certificates made
// in QEMU's directory layout); a client without a certificate, or with
// a name authz-simple does not allow, is refused; PSK credentials start
// and stop a server.
func TestNBDOverTLSWithQemuImg(t *testing.T) {
	qemuImg := qemuTool(t, "qemu-img")
	dir := t.TempDir()
	ca := testpki.NewCA(t, "blockd test CA")
	sub := func(name string) string {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		ca.WriteCA(d)
		return d
	}
	srv, cli, intruder, nocert := sub("server"), sub("client"), sub("intruder"), sub("nocert")
	ca.Issue(srv, "server", pkix.Name{CommonName: "localhost"}, x509.ExtKeyUsageServerAuth)
	ca.Issue(cli, "client", pkix.Name{CommonName: "client", Organization: []string{"blockd"}}, x509.ExtKeyUsageClientAuth)
	ca.Issue(intruder, "client", pkix.Name{CommonName: "intruder"}, x509.ExtKeyUsageClientAuth)
	psk := sub("psk")
	if err := os.WriteFile(filepath.Join(psk, "keys.psk"), []byte("qemu:00112233445566778899aabbccddeeff\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i*13 + i>>12)
	}
	img := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	d := StartDaemon(t, blockdBin, dir,
		"--object", "tls-creds-x509,id=tls0,endpoint=server,dir="+srv,
		"--object", "tls-creds-psk,id=psk0,endpoint=server,dir="+psk,
		"--object", "authz-simple,id=auth0,identity=CN=client,,O=blockd",
		"--blockdev", "driver=file,node-name=f,filename="+img)
	defer d.Stop(t)
	c := Dial(t, d.Sock)
	defer c.Close()
	c.Negotiate(t)
	sock := filepath.Join(dir, "nbd.sock")
	addr := map[string]any{"type": "unix", "data": map[string]any{"path": sock}}
	// PSK credentials start a server too (GnuTLS; their interop test is
	// tests/nbd's TestTLSPSKDaemon), and stopping it frees them.
	if r, _ := c.Command(t, "nbd-server-start", map[string]any{"addr": addr, "tls-creds": "psk0"}); r["error"] != nil {
		t.Fatalf("nbd-server-start with PSK credentials: %v", r)
	}
	if r, _ := c.Command(t, "nbd-server-stop", nil); r["error"] != nil {
		t.Fatalf("nbd-server-stop: %v", r)
	}
	if r, _ := c.Command(t, "nbd-server-start", map[string]any{"addr": addr, "tls-creds": "tls0", "tls-authz": "auth0"}); r["error"] != nil {
		t.Fatalf("nbd-server-start: %v", r)
	}
	if r, _ := c.Command(t, "block-export-add", map[string]any{"type": "nbd", "id": "e", "node-name": "f", "name": "disk"}); r["error"] != nil {
		t.Fatalf("block-export-add: %v", r)
	}
	convert := func(credDir, out string) (string, error) {
		b, err := exec.Command(qemuImg, "convert",
			"--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+credDir,
			"--image-opts", "driver=nbd,server.type=unix,server.path="+sock+",export=disk,tls-creds=tls0,tls-hostname=localhost",
			"-O", "raw", out).CombinedOutput()
		return string(b), err
	}
	out := filepath.Join(dir, "out.raw")
	if msg, err := convert(cli, out); err != nil {
		t.Fatalf("qemu-img convert over TLS: %v\n%s", err, msg)
	}
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("data read over TLS differs (%v)", err)
	}
	for name, credDir := range map[string]string{"without a certificate": nocert, "with a name authz refuses": intruder} {
		msg, err := convert(credDir, filepath.Join(dir, "x.raw"))
		t.Logf("qemu-img %s: %v: %s", name, err, strings.TrimSpace(msg))
		if err == nil {
			t.Errorf("qemu-img %s was served:\n%s", name, msg)
		}
	}

	// authz-listfile: the rules come from a file and follow its changes
	// (renamed into place, as editors and config tools write).
	rules := filepath.Join(dir, "rules.json")
	writeRules := func(allow string) {
		tmp := rules + ".tmp"
		text := `{"policy": "deny", "rules": [{"match": "` + allow + `", "policy": "allow"}]}`
		if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, rules); err != nil {
			t.Fatal(err)
		}
	}
	writeRules("CN=intruder")
	if r, _ := c.Command(t, "object-add", map[string]any{"qom-type": "authz-listfile", "id": "authf", "filename": rules}); r["error"] != nil {
		t.Fatalf("object-add authz-listfile: %v", r)
	}
	c.DeleteExport(t, "e")
	for _, cmd := range []struct {
		name string
		args any
	}{
		{"nbd-server-stop", nil},
		{"nbd-server-start", map[string]any{"addr": addr, "tls-creds": "tls0", "tls-authz": "authf"}},
		{"block-export-add", map[string]any{"type": "nbd", "id": "e", "node-name": "f", "name": "disk"}},
	} {
		if r, _ := c.Command(t, cmd.name, cmd.args); r["error"] != nil {
			t.Fatalf("%s: %v", cmd.name, r)
		}
	}
	served := func(credDir string) bool {
		_, err := convert(credDir, filepath.Join(dir, "y.raw"))
		return err == nil
	}
	if !served(intruder) || served(cli) {
		t.Fatalf("authz-listfile allowing CN=intruder: intruder served %v, client served %v", served(intruder), served(cli))
	}
	writeRules("CN=client,O=blockd")
	for deadline := time.Now().Add(10 * time.Second); !served(cli); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the changed rules file was not read again: the client is still refused")
		}
	}
	if served(intruder) {
		t.Error("the intruder is still served after the rules changed")
	}
}

// pr-manager-helper against a running qemu-pr-helper: the connection
// and its PR_MANAGER_STATUS_CHANGED event, the object's properties, a
// file node naming it in pr-manager, object-del while the node uses it,
// and the refusals, as qemu-storage-daemon gives them. (A refused
// pr-manager comes last: qemu-storage-daemon 7.2 then closes its own
// descriptor 0 by mistake.)
func TestPRManagerHelperLikeReference(t *testing.T) {
	helper := qemuTool(t, "qemu-pr-helper")
	setup := func(t *testing.T, dir string) {
		if err := os.WriteFile(filepath.Join(dir, "f.img"), make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		sock := filepath.Join(dir, "pr.sock")
		cmd := exec.Command(helper, "-k", sock)
		cmd.SysProcAttr = DieWithTest()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Skipf("SKIP LOUDLY: qemu-pr-helper did not listen on %s (it may need privileges here)", sock)
			}
		}
	}
	scenario := func(s *session) {
		cmdWithEvents := func(name string, args any) {
			r, evs := s.c.Command(s.t, name, args)
			for _, e := range evs {
				s.observe("event %s %s", e["event"], compact(e["data"]))
			}
			a, _ := json.Marshal(args)
			s.observe("%s %s -> %s", name, a, compact(r))
		}
		sock := filepath.Join(s.Dir, "pr.sock")
		cmdWithEvents("object-add", map[string]any{"qom-type": "pr-manager-helper", "id": "pr0", "path": sock})
		s.OK("qom-list", map[string]any{"path": "/objects/pr0"})
		s.OK("qom-get", map[string]any{"path": "/objects/pr0", "property": "path"})
		s.OK("qom-list-types", map[string]any{"implements": "pr-manager"})
		s.OK("blockdev-add", map[string]any{"driver": "file", "node-name": "f", "filename": filepath.Join(s.Dir, "f.img"), "pr-manager": "pr0"})
		s.OK("object-del", map[string]any{"id": "pr0"})
		s.Err("object-add", map[string]any{"qom-type": "pr-manager-helper", "id": "pr1", "path": filepath.Join(s.Dir, "none.sock")},
			"Failed to connect to '"+filepath.Join(s.Dir, "none.sock")+"': No such file or directory")
		s.Err("object-add", map[string]any{"qom-type": "pr-manager-helper", "id": "pr1", "path": filepath.Join(s.Dir, "f.img")},
			"Failed to connect to '"+filepath.Join(s.Dir, "f.img")+"': Connection refused")
		s.OK("object-add", map[string]any{"qom-type": "secret", "id": "s0", "data": "x"})
		s.Err("blockdev-add", map[string]any{"driver": "file", "node-name": "g", "filename": filepath.Join(s.Dir, "f.img"), "pr-manager": "s0", "locking": "off"},
			"Object with id 's0' is not a persistent reservation manager")
	}
	compareWithReference(t, setup, scenario)
}
