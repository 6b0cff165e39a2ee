package rbdtest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	qmptest "blockd/tests/qmp"
)

// tool runs a QEMU or libnbd tool in dir; failure fails the test.
func tool(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(qmptest.QemuTool(t, name), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// daemon is a blockd with a QMP client and an NBD server on a socket.
type daemon struct {
	*qmptest.Daemon
	c       *qmptest.Client
	nbdSock string
}

func startBlockd(t *testing.T, dir string, extra ...string) *daemon {
	t.Helper()
	sock := filepath.Join(dir, "nbd.sock")
	d := qmptest.StartDaemon(t, blockdBin, dir, append([]string{"--nbd-server", "addr.type=unix,addr.path=" + sock}, extra...)...)
	c := qmptest.Dial(t, d.Sock)
	bd := &daemon{Daemon: d, c: c, nbdSock: sock}
	if _, _, err := c.Next(); err != nil { // the greeting
		t.Fatal(err)
	}
	bd.ok(t, "qmp_capabilities", nil)
	return bd
}

// stop quits blockd cleanly (images closed, cache flushed, locks and
// watches released) and waits for it.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.ok(t, "quit", nil)
	if err := d.Wait(); err != nil {
		t.Fatalf("blockd exit: %v\n%s", err, d.Stderr())
	}
	d.c.Close()
}

func (d *daemon) ok(t *testing.T, cmd string, args any) map[string]any {
	t.Helper()
	rep, _ := d.c.Command(t, cmd, args)
	if rep["error"] != nil {
		t.Fatalf("%s: %v\n%s", cmd, rep["error"], d.Stderr())
	}
	return rep
}

func (d *daemon) export(t *testing.T, node string, writable bool) string {
	t.Helper()
	d.ok(t, "block-export-add", map[string]any{"type": "nbd", "id": node, "node-name": node, "writable": writable})
	return "nbd+unix:///" + node + "?socket=" + d.nbdSock
}

func rbdNode(node, conf, image string) map[string]any {
	return map[string]any{"driver": "rbd", "node-name": node, "pool": "rbd", "image": image, "conf": conf}
}

// exported is a fresh image as node "r" of a new blockd, exported
// writable over NBD.
type exported struct {
	conf, dir, img string
	uri            string // the image through librbd, for QEMU's tools
	d              *daemon
	nbd            string // the export's URI
}

func newExported(t *testing.T, size int64) exported {
	conf := needCluster(t)
	e := exported{conf: conf, dir: t.TempDir(), img: newImage(t, size)}
	e.uri = qemuURI(conf, e.img)
	e.d = startBlockd(t, e.dir)
	e.d.ok(t, "blockdev-add", rbdNode("r", conf, e.img))
	e.nbd = e.d.export(t, "r", true)
	return e
}

// Patterns written over NBD to blockd's rbd node read back through
// librbd with qemu-io, and the other way; block status through the
// export shows what qemu-img map shows through librbd.
func TestNBDAndQemuIOInterop(t *testing.T) {
	e := newExported(t, 64<<20)
	conf, dir, img, uri, d, nbd := e.conf, e.dir, e.img, e.uri, e.d, e.nbd
	tool(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0xa1 0 1M", "-c", "write -P 0xa2 5M 3M",
		"-c", "write -P 0xa3 33M 64k", "-c", "write -z 5M 64k", "-c", "flush", nbd)
	tool(t, dir, "qemu-io", "-f", "raw", "-c", "read -P 0xa1 0 1M", "-c", "read -P 0 5M 64k",
		"-c", "read -P 0xa2 5308416 3080192", "-c", "read -P 0xa3 33M 64k", "-c", "read -P 0 40M 1M", nbd)
	// librbd itself: the data is in the cluster, not only in blockd.
	tool(t, dir, "qemu-io", "-f", "raw", "-r", "-U", "-c", "read -P 0xa1 0 1M", "-c", "read -P 0 5M 64k",
		"-c", "read -P 0xa2 5308416 3080192", "-c", "read -P 0xa3 33M 64k", "-c", "read -P 0 40M 1M", uri)

	// Allocation as QEMU sees it through librbd and through the export.
	wantMap := dataExtents(t, tool(t, dir, "qemu-img", "map", "-U", "--output=json", "-f", "raw", uri))
	gotMap := dataExtents(t, tool(t, dir, "qemu-img", "map", "--output=json", "-f", "raw", nbd))
	if wantMap != gotMap || !strings.Contains(gotMap, "0+") {
		t.Fatalf("data extents differ:\n librbd: %s\n blockd: %s", wantMap, gotMap)
	}
	d.stop(t)

	// The other way: qemu-io writes through librbd, blockd serves it.
	tool(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0xb1 2M 1M", "-c", "write -P 0xb2 63M 1M", uri)
	d = startBlockd(t, dir)
	d.ok(t, "blockdev-add", rbdNode("r", conf, img))
	nbd = d.export(t, "r", false)
	tool(t, dir, "qemu-io", "-f", "raw", "-r", "-c", "read -P 0xb1 2M 1M", "-c", "read -P 0xb2 63M 1M",
		"-c", "read -P 0xa1 0 1M", nbd)
	d.stop(t)
}

// dataExtents reduces qemu-img map's JSON to the data ranges, merged.
func dataExtents(t *testing.T, out string) string {
	t.Helper()
	var ext []struct {
		Start, Length int64
		Data          bool
	}
	if err := json.Unmarshal([]byte(out), &ext); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	var b strings.Builder
	var start, end int64 = -1, -1
	flush := func() {
		if start >= 0 {
			fmt.Fprintf(&b, "%d+%d ", start, end-start)
		}
	}
	for _, e := range ext {
		if !e.Data {
			continue
		}
		if e.Start == end {
			end += e.Length
			continue
		}
		flush()
		start, end = e.Start, e.Start+e.Length
	}
	flush()
	return b.String()
}

// A read-only node on an rbd snapshot reads the snapshot's data, refuses
// writes through its export, and cannot be reopened read-write.
func TestSnapshotNode(t *testing.T) {
	conf := needCluster(t)
	dir := t.TempDir()
	img := newImage(t, 16<<20)
	uri := qemuURI(conf, img)
	tool(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0xc1 0 4M", uri)
	rbdCmd(t, "-c", conf, "snap", "create", "rbd/"+img+"@before")
	tool(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0xc2 0 4M", uri)

	d := startBlockd(t, dir)
	node := rbdNode("s", conf, img)
	node["snapshot"] = "before"
	node["read-only"] = true
	d.ok(t, "blockdev-add", node)
	nbd := d.export(t, "s", false)
	tool(t, dir, "qemu-io", "-f", "raw", "-r", "-c", "read -P 0xc1 0 4M", nbd)
	// The export of a read-only node is read-only: a read-write open fails.
	cmd := exec.Command(qmptest.QemuTool(t, "qemu-io"), "-f", "raw", "-c", "write -P 0xff 0 64k", nbd)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Fatalf("write to a read-only snapshot export: err=%v\n%s", err, out)
	}
	rep, _ := d.c.Command(t, "blockdev-reopen", map[string]any{"options": []any{map[string]any{
		"driver": "rbd", "node-name": "s", "pool": "rbd", "image": img, "conf": conf, "snapshot": "before", "read-only": false}}})
	if e, _ := rep["error"].(map[string]any); e == nil || e["desc"] != "Cannot change node 's' to r/w when using RBD snapshot" {
		t.Fatalf("reopen r/w: %v", rep)
	}
	d.ok(t, "block-export-del", map[string]any{"id": "s", "mode": "hard"})
	d.stop(t)
	tool(t, dir, "qemu-io", "-f", "raw", "-r", "-U", "-c", "read -P 0xc2 0 4M", uri)
}

// encrypt is refused with blockd's text, before anything is opened.
func TestEncryptRefused(t *testing.T) {
	conf := needCluster(t)
	dir := t.TempDir()
	img := newImage(t, 16<<20)
	d := startBlockd(t, dir)
	node := rbdNode("e", conf, img)
	node["encrypt"] = map[string]any{"format": "luks", "key-secret": "k"}
	rep, _ := d.c.Command(t, "blockdev-add", node)
	if e, _ := rep["error"].(map[string]any); e == nil || e["desc"] != "blockd does not support encrypted rbd images ('encrypt')" {
		t.Fatalf("blockdev-add with encrypt: %v", rep)
	}
	d.stop(t)
}

// A key given as a secret object authenticates; a wrong key is refused
// by the cluster.
func TestKeySecret(t *testing.T) {
	conf := needCluster(t)
	dir := t.TempDir()
	img := newImage(t, 16<<20)
	keyring, err := os.ReadFile(filepath.Join(filepath.Dir(conf), "keyring"))
	if err != nil {
		t.Fatal(err)
	}
	key := ""
	inAdmin := false
	for _, l := range strings.Split(string(keyring), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "[") {
			inAdmin = l == "[client.admin]"
		}
		if k, ok := strings.CutPrefix(l, "key = "); ok && inAdmin {
			key = k
		}
	}
	if key == "" {
		t.Fatalf("no client.admin key in %s", keyring)
	}
	// A conf without the keyring, so that only the secret can authenticate.
	raw, _ := os.ReadFile(conf)
	var lines []string
	for _, l := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "keyring") {
			lines = append(lines, l)
		}
	}
	noKey := filepath.Join(dir, "nokey.conf")
	if err := os.WriteFile(noKey, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startBlockd(t, dir)
	d.ok(t, "object-add", map[string]any{"qom-type": "secret", "id": "good", "data": key, "format": "base64"})
	d.ok(t, "object-add", map[string]any{"qom-type": "secret", "id": "bad", "data": "QUFBQUFBQUFBQUFBQUFBQQ==", "format": "base64"})
	node := rbdNode("k", noKey, img)
	node["key-secret"] = "good"
	node["user"] = "admin"
	node["auth-client-required"] = []string{"cephx"}
	d.ok(t, "blockdev-add", node)
	node = rbdNode("b", noKey, img)
	node["key-secret"] = "bad"
	rep, _ := d.c.Command(t, "blockdev-add", node)
	if e, _ := rep["error"].(map[string]any); e == nil || !strings.HasPrefix(e["desc"].(string), "error connecting: ") {
		t.Fatalf("blockdev-add with a wrong key: %v", rep)
	}
	d.stop(t)
}

// kill ends blockd with SIGKILL: no flush, no close.
func kill(d *daemon) {
	_ = syscall.Kill(d.Pid(), syscall.SIGKILL)
	_ = d.Wait()
	d.c.Close()
}

// Two writers of one image, as with QEMU: librbd's exclusive lock moves
// between blockd and qemu-io on request, and each one's writes land.
func TestExclusiveLockHandover(t *testing.T) {
	e := newExported(t, 16<<20)
	conf, dir, img, uri, d, nbd := e.conf, e.dir, e.img, e.uri, e.d, e.nbd
	tool(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0xd1 0 1M", "-c", "flush", nbd)
	owners := rbdCmd(t, "-c", conf, "lock", "ls", "rbd/"+img)
	tool(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0xd2 1M 1M", uri)
	tool(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0xd3 2M 1M", "-c", "flush", nbd)
	tool(t, dir, "qemu-io", "-f", "raw", "-r", "-c", "read -P 0xd1 0 1M", "-c", "read -P 0xd2 1M 1M", "-c", "read -P 0xd3 2M 1M", nbd)
	d.stop(t)
	tool(t, dir, "qemu-io", "-f", "raw", "-r", "-c", "read -P 0xd1 0 1M", "-c", "read -P 0xd2 1M 1M", "-c", "read -P 0xd3 2M 1M", uri)
	if !strings.Contains(owners, "auto ") {
		t.Fatalf("blockd's writes did not take librbd's exclusive lock:\n%s", owners)
	}
}

// runTool runs a tool and returns its output and error, for reads whose
// failure is an answer, not a test failure.
func runTool(t *testing.T, dir, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(qmptest.QemuTool(t, name), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil && strings.Contains(string(out), "Pattern verification failed") {
		err = errPattern
	}
	return string(out), err
}

var errPattern = errorString("pattern verification failed")

type errorString string

func (e errorString) Error() string { return string(e) }

// Writes over NBD reach librbd without a goroutine waiting on each
// (the asynchronous path): many in flight at once, each is in the
// cluster afterwards, marks the node's dirty bitmap and moves the
// node's statistics, as a synchronous write does.
func TestNBDWritesInFlightTracked(t *testing.T) {
	e := newExported(t, 64<<20)
	dir, uri, d, nbd := e.dir, e.uri, e.d, e.nbd
	d.ok(t, "block-dirty-bitmap-add", map[string]any{"node": "r", "name": "b", "granularity": 65536})
	const n = 32
	var args, check []string
	for i := range n {
		off := (i * 37 % n) * (2 << 20) // out of order, one per 2 MiB
		args = append(args, "-c", fmt.Sprintf("aio_write -P 0x%x %d 64k", 0x40+i, off))
		check = append(check, "-c", fmt.Sprintf("read -P 0x%x %d 64k", 0x40+i, off))
	}
	tool(t, dir, "qemu-io", append(append(append([]string{"-f", "raw"}, args...), "-c", "aio_flush"), nbd)...)

	rep := d.ok(t, "query-named-block-nodes", map[string]any{"flat": true})
	var count float64 = -1
	for _, nd := range rep["return"].([]any) {
		m := nd.(map[string]any)
		if m["node-name"] == "r" {
			for _, b := range m["dirty-bitmaps"].([]any) {
				count = b.(map[string]any)["count"].(float64)
			}
		}
	}
	if count != n*65536 {
		t.Fatalf("dirty bitmap count %v after %d writes of 64 KiB, want %d", count, n, n*65536)
	}
	rep = d.ok(t, "query-blockstats", map[string]any{"query-nodes": true})
	// The node-level statistic QEMU keeps: the end of the highest write.
	var highest float64 = -1
	for _, s := range rep["return"].([]any) {
		m := s.(map[string]any)
		if m["node-name"] == "r" {
			highest = m["stats"].(map[string]any)["wr_highest_offset"].(float64)
		}
	}
	if want := (n-1)*(2<<20) + 65536; highest != float64(want) {
		t.Fatalf("wr_highest_offset %v on the node, want %d", highest, want)
	}
	d.stop(t)
	tool(t, dir, "qemu-io", append(append([]string{"-f", "raw", "-r", "-U"}, check...), uri)...)
}
