package objects

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"blockd/schema"
)

// qmp runs one command through the registry's declarations, as a
// monitor would, and returns its result or error text.
func qmp(t *testing.T, reg *schema.Registry, cmd, args string) (string, string) {
	t.Helper()
	res, err := reg.Call(context.Background(), cmd, json.RawMessage(args))
	if err != nil {
		return "", err.Error()
	}
	return string(res), ""
}

func newQOM(t *testing.T) (*Registry, *schema.Registry) {
	r := NewRegistry(nil)
	reg := schema.NewRegistry()
	r.RegisterCommands(reg)
	return r, reg
}

// qom-set on an authz-simple identity changes whom it lets in; on a
// secret it changes the property only, not the value users get.
func TestQomSetTakesEffect(t *testing.T) {
	r, reg := newQOM(t)
	mustAdd(t, r, "authz-simple,id=a0,identity=CN=alice")
	mustAdd(t, r, "secret,id=s0,data=abc")
	if ok, err := r.Authorize("a0", "CN=alice"); !ok || err != nil {
		t.Fatalf("alice before: %v %v", ok, err)
	}
	if _, e := qmp(t, reg, "qom-set", `{"path":"/objects/a0","property":"identity","value":"CN=bob"}`); e != "" {
		t.Fatal(e)
	}
	if ok, _ := r.Authorize("a0", "CN=alice"); ok {
		t.Error("alice still allowed after qom-set")
	}
	if ok, _ := r.Authorize("a0", "CN=bob"); !ok {
		t.Error("bob not allowed after qom-set")
	}
	if _, e := qmp(t, reg, "qom-set", `{"path":"/objects/s0","property":"data","value":"xyz"}`); e != "" {
		t.Fatal(e)
	}
	if got, _ := qmp(t, reg, "qom-get", `{"path":"/objects/s0","property":"data"}`); got != `"xyz"` {
		t.Errorf("qom-get data = %s", got)
	}
	if v, _ := r.Secret("s0"); string(v) != "abc" {
		t.Errorf("secret value changed to %q by qom-set", v)
	}
}

// A refused pool size is stored anyway, as the reference does; bad
// values leave the object as it was.
func TestIothreadProperties(t *testing.T) {
	r, reg := newQOM(t)
	mustAdd(t, r, "iothread,id=io0,poll-max-ns=0")
	get := func(p string) string {
		v, e := qmp(t, reg, "qom-get", `{"path":"io0","property":"`+p+`"}`)
		if e != "" {
			t.Fatal(e)
		}
		return v
	}
	if get("poll-max-ns") != "0" || get("thread-pool-max") != "64" {
		t.Fatalf("defaults: %s %s", get("poll-max-ns"), get("thread-pool-max"))
	}
	_, e := qmp(t, reg, "qom-set", `{"path":"io0","property":"poll-grow","value":-3}`)
	if !strings.Contains(e, "must be in range") || get("poll-grow") != "0" {
		t.Errorf("negative poll-grow: %q, now %s", e, get("poll-grow"))
	}
	if _, e := qmp(t, reg, "qom-set", `{"path":"io0","property":"thread-pool-min","value":65}`); e != "bad thread-pool-min/thread-pool-max values" {
		t.Errorf("min above max: %q", e)
	}
	if get("thread-pool-min") != "65" {
		t.Errorf("refused value not kept: %s", get("thread-pool-min"))
	}
	if !r.IsIothread("io0") || r.IsIothread("nope") {
		t.Error("IsIothread")
	}
	mustAdd(t, r, "main-loop,id=m0")
	if _, e := qmp(t, reg, "object-del", `{"id":"m0"}`); e != "object 'm0' is in use, can not be deleted" {
		t.Errorf("main-loop deletion: %q", e)
	}
}

// Objects go in and out of the tree, and a chardev added beside them is
// found by a partial path.
func TestTreeChildren(t *testing.T) {
	r, reg := newQOM(t)
	RegisterClassOnce(t, &Class{Name: "test-chardev", Parent: "object"})
	if err := r.AddChild("chardevs", "c0", "test-chardev", nil); err != nil {
		t.Fatal(err)
	}
	if err := r.AddChild("chardevs", "c0", "test-chardev", nil); err == nil {
		t.Error("duplicate chardev accepted")
	}
	if got, _ := qmp(t, reg, "qom-get", `{"path":"c0","property":"type"}`); got != `"test-chardev"` {
		t.Errorf("partial path: %s", got)
	}
	r.RemoveChild("chardevs", "c0")
	if _, e := qmp(t, reg, "qom-list", `{"path":"c0"}`); e != "Device 'c0' not found" {
		t.Errorf("after removal: %q", e)
	}
	for i := range 40 { // past several resizes of the container's table
		mustAdd(t, r, "secret,id=s"+string(rune('a'+i%26))+strings.Repeat("x", i/26)+",data=x")
	}
	list, _ := qmp(t, reg, "qom-list", `{"path":"/objects"}`)
	if n := strings.Count(list, "child<secret>"); n != 40 {
		t.Errorf("%d children listed", n)
	}
}

func RegisterClassOnce(t *testing.T, c *Class) {
	if lookupClass(c.Name) == nil {
		RegisterClass(c)
	}
}

// secret_keyring reads a key the test adds to its process keyring, and
// decrypts it with a master key as a secret's data.
func TestSecretKeyring(t *testing.T) {
	id, err := unix.AddKey("user", "blockd-test", []byte("s3cret"), unix.KEY_SPEC_PROCESS_KEYRING)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EACCES) {
			t.Skipf("keyctl not allowed here: %v", err)
		}
		t.Fatal(err)
	}
	defer unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0)
	r, reg := newQOM(t)
	if _, e := qmp(t, reg, "object-add", `{"qom-type":"secret_keyring","id":"k0","serial":`+itoa(id)+`}`); e != "" {
		t.Fatal(e)
	}
	if v, err := r.Secret("k0"); err != nil || string(v) != "s3cret" {
		t.Fatalf("keyring secret: %q %v", v, err)
	}
	if got, _ := qmp(t, reg, "qom-get", `{"path":"/objects/k0","property":"serial"}`); got != itoa(id) {
		t.Errorf("serial: %s", got)
	}
	// Revoked keys are refused with the kernel's error.
	unix.KeyctlInt(unix.KEYCTL_REVOKE, id, 0, 0, 0)
	_, e := qmp(t, reg, "object-add", `{"qom-type":"secret_keyring","id":"k1","serial":`+itoa(id)+`}`)
	if !strings.HasPrefix(e, "Unable to read serial key ") || !strings.Contains(e, "revoked") {
		t.Errorf("revoked key: %q", e)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// NBD connections authorize on their own goroutines while qom-set and
// object-add/-del run on the owner's: run them at once under -race.
func TestAuthorizeWhileQomChanges(t *testing.T) {
	r, reg := newQOM(t)
	mustAdd(t, r, "authz-simple,id=a0,identity=CN=alice")
	done := make(chan struct{})
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				if _, err := r.Authorize("a0", "CN=alice"); err != nil {
					errs <- err
					return
				}
				_, _ = r.Secret("s")
			}
		}()
	}
	for i := range 200 {
		id := []string{"CN=alice", "CN=bob"}[i%2]
		if _, e := qmp(t, reg, "qom-set", `{"path":"/objects/a0","property":"identity","value":"`+id+`"}`); e != "" {
			t.Fatal(e)
		}
		qmp(t, reg, "object-add", `{"qom-type":"secret","id":"s","data":"x"}`)
		qmp(t, reg, "qom-list", `{"path":"/objects"}`)
		qmp(t, reg, "object-del", `{"id":"s"}`)
	}
	close(done)
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if ok, _ := r.Authorize("a0", "CN=bob"); !ok {
		t.Error("last identity set was CN=bob")
	}
}

// authz-list: rules in order, exact or glob, then the default policy;
// qom-set changes them for the next client.
func TestAuthzList(t *testing.T) {
	r, reg := newQOM(t)
	if _, e := qmp(t, reg, "object-add", `{"qom-type":"authz-list","id":"l0","policy":"allow",
		"rules":[{"match":"CN=mallory","policy":"deny"},{"match":"CN=b*,O=[xy]?","policy":"deny","format":"glob"}]}`); e != "" {
		t.Fatal(e)
	}
	for id, want := range map[string]bool{
		"CN=alice": true, "CN=mallory": false, "CN=bob,O=x1": false, "CN=bob,O=z1": true,
		"CN=b/c,O=y/": false, "CN=bob,O=x12": true,
	} {
		if ok, err := r.Authorize("l0", id); err != nil || ok != want {
			t.Errorf("%s: %v %v, want %v", id, ok, err, want)
		}
	}
	if _, e := qmp(t, reg, "qom-set", `{"path":"l0","property":"rules","value":[{"match":"CN=alice"}]}`); e != "Parameter 'rules[0].policy' is missing" {
		t.Errorf("bad rules: %q", e)
	}
	qmp(t, reg, "qom-set", `{"path":"l0","property":"policy","value":"deny"}`)
	qmp(t, reg, "qom-set", `{"path":"l0","property":"rules","value":[{"match":"CN=alice","policy":"allow"}]}`)
	if ok, _ := r.Authorize("l0", "CN=alice"); !ok {
		t.Error("alice after qom-set")
	}
	if ok, _ := r.Authorize("l0", "CN=bob,O=z1"); ok {
		t.Error("default policy deny after qom-set")
	}
	for pat, s := range map[string]string{"a*": "a/b", "[!a]x": "bx", "[]]": "]", "\\*": "*", "[a-c]": "b", "x[": "x["} {
		if !fnmatch(pat, s) {
			t.Errorf("fnmatch(%q, %q) false", pat, s)
		}
	}
	for pat, s := range map[string]string{"a?": "a", "[!a]x": "ax", "[a-c]": "d", "\\*": "a"} {
		if fnmatch(pat, s) {
			t.Errorf("fnmatch(%q, %q) true", pat, s)
		}
	}
}

// Anonymous credentials are created as the reference creates them and
// refused where a TLS configuration would be built from them.
func TestTLSAnonRefusedForUse(t *testing.T) {
	r, _ := newQOM(t)
	mustAdd(t, r, "tls-creds-anon,id=an0,endpoint=server")
	mustAdd(t, r, "tls-creds-anon,id=an1")
	if _, err := r.TLSServerConfig("an0"); !errors.Is(err, ErrAnonUnsupported) {
		t.Errorf("server config from anon: %v", err)
	}
	if _, err := r.TLSClientConfig("an1"); !errors.Is(err, ErrAnonUnsupported) {
		t.Errorf("client config from anon: %v", err)
	}
}
