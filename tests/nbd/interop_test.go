package nbdtest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// image makes a 64 MiB qcow2 with data at 0 (1 MiB of 0x5a) and 40 MiB
// (512 KiB of 0x33), and its raw twin for comparisons.
func image(t *testing.T, dir string) (qcow, ref string) {
	t.Helper()
	qcow, ref = filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "ref.raw")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", qcow, "64M")
	run(t, "qemu-io", "-c", "write -P 0x5a 0 1M", "-c", "write -P 0x33 40M 512K", qcow)
	run(t, "qemu-img", "convert", "-O", "raw", qcow, ref)
	return qcow, ref
}

// TestQemuToolsOverNBD: qemu-img info/compare/map/convert and qemu-io
// writes and pattern reads through a writable export; the data lands in
// the qcow2 image, which stays clean.
func TestQemuToolsOverNBD(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	qcow, ref := image(t, dir)
	s := start(t, dir, "--blockdev", qcow2Node("n", qcow),
		"--export", "type=nbd,id=e,node-name=n,name=disk,writable=on")
	u := s.uri("disk")

	var info struct {
		VirtualSize int64  `json:"virtual-size"`
		Format      string `json:"format"`
	}
	if err := json.Unmarshal([]byte(run(t, "qemu-img", "info", "--output=json", u)), &info); err != nil {
		t.Fatal(err)
	}
	if info.VirtualSize != 64<<20 || info.Format != "raw" {
		t.Fatalf("qemu-img info: %+v", info)
	}
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", ref, u)

	var m []struct {
		Start, Length int64
		Data          bool
	}
	if err := json.Unmarshal([]byte(run(t, "qemu-img", "map", "--output=json", "-f", "raw", u)), &m); err != nil {
		t.Fatal(err)
	}
	var data []int64
	for _, e := range m {
		if e.Data {
			data = append(data, e.Start, e.Length)
		}
	}
	if len(data) != 4 || data[0] != 0 || data[1] != 1<<20 || data[2] != 40<<20 || data[3] != 512<<10 {
		t.Fatalf("qemu-img map data extents %v (map %+v)", data, m)
	}

	out := filepath.Join(dir, "out.raw")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", u, out)
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", ref, out)

	o := run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x77 8M 3M", "-c", "write -z 9M 64k", "-c", "aio_write -P 0x12 20M 1M",
		"-c", "aio_write -P 0x13 21M 1M", "-c", "aio_flush", "-c", "discard 40M 64k", u)
	if strings.Contains(o, "failed") {
		t.Fatalf("qemu-io writes: %s", o)
	}
	o = run(t, "qemu-io", "-f", "raw", "-c", "read -P 0x77 8M 1M", "-c", "read -P 0 9M 64k", "-c", "read -P 0x77 9280k 1M",
		"-c", "read -P 0x12 20M 1M", "-c", "read -P 0x13 21M 1M", "-c", "read -P 0x33 41024k 448k", u)
	if strings.Contains(o, "fail") || strings.Count(o, "read ") != 6 {
		t.Fatalf("qemu-io pattern reads: %s", o)
	}

	s.qmp.Close()
	s.Stop(t)
	run(t, "qemu-img", "check", "-q", qcow)
	o = run(t, "qemu-io", "-r", "-c", "read -P 0x77 8M 1M", "-c", "read -P 0x12 20M 1M", "-c", "read -P 0x5a 0 1M", qcow)
	if strings.Contains(o, "fail") || strings.Count(o, "read ") != 3 {
		t.Fatalf("data written over NBD is not in the image: %s", o)
	}
}

// TestNbdinfoAndNbdcopy: export listing with description, both meta
// contexts, and nbdcopy in both directions with four connections.
func TestNbdinfoAndNbdcopy(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "nbdinfo", "nbdcopy")
	dir := t.TempDir()
	qcow, ref := image(t, dir)
	base := filepath.Join(dir, "base.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "64M")
	run(t, "qemu-io", "-c", "write -P 0x11 32M 1M", base)
	top := filepath.Join(dir, "top.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
	run(t, "qemu-io", "-c", "write -P 0x22 0 64k", top)
	s := start(t, dir, "--blockdev", qcow2Node("n", qcow),
		"--blockdev", `{"driver":"qcow2","node-name":"t","file":{"driver":"file","filename":"`+top+`"}}`,
		"--export", "type=nbd,id=e,node-name=n,name=disk,writable=on,description=the disk",
		"--export", "type=nbd,id=c,node-name=t,name=chain,allocation-depth=on")

	l := run(t, "nbdinfo", "--list", "nbd+unix://?socket="+s.nbdSock)
	for _, w := range []string{"export=", "disk", "description: the disk", "chain", "base:allocation", "qemu:allocation-depth"} {
		if !strings.Contains(l, w) {
			t.Fatalf("nbdinfo --list lacks %q:\n%s", w, l)
		}
	}
	mp := run(t, "nbdinfo", "--map", s.uri("disk"))
	if !strings.Contains(mp, "0     1048576    0  data") || !strings.Contains(mp, "hole,zero") {
		t.Fatalf("nbdinfo --map:\n%s", mp)
	}
	d := run(t, "nbdinfo", "--map=qemu:allocation-depth", s.uri("chain"))
	// top defines 0..64k (depth 1), base defines 32M..33M (depth 2).
	for _, w := range []string{"0       65536    1  local", "33554432     1048576    2  backing depth 2", "0 absent"} {
		if !strings.Contains(strings.Join(strings.Fields(d), " "), strings.Join(strings.Fields(w), " ")) {
			t.Fatalf("allocation-depth map lacks %q:\n%s", w, d)
		}
	}
	if _, err := runErr("nbdinfo", "--map=qemu:allocation-depth", s.uri("disk")); err == nil {
		t.Fatal("allocation-depth offered on an export without it")
	}

	back := filepath.Join(dir, "back.raw")
	run(t, "nbdcopy", "-C", "4", s.uri("disk"), back)
	a, _ := os.ReadFile(ref)
	b, _ := os.ReadFile(back)
	if !bytes.Equal(a, b) {
		t.Fatal("nbdcopy out differs from the image")
	}
	rnd := filepath.Join(dir, "rnd.raw")
	run(t, "sh", "-c", "head -c 16M /dev/urandom > "+rnd+" && truncate -s 64M "+rnd)
	run(t, "nbdcopy", "-C", "4", "--flush", rnd, s.uri("disk"))
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", rnd, s.uri("disk"))
	s.qmp.Close()
	s.Stop(t)
	run(t, "qemu-img", "check", "-q", qcow)
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", rnd, qcow)
}

// nbdshScript exercises requests the tools do not send; it prints one
// line per check for the test to assert.
const nbdshScript = `
import errno
h.set_strict_mode(0)  # let the server judge every request
h.add_meta_context("base:allocation")
h.connect_uri(URI)
size = h.get_size()
print("size", size)
print("flags", h.can_fua(), h.can_trim(), h.can_zero(), h.can_fast_zero(), h.can_cache(), h.can_df(), h.can_multi_conn(), h.is_read_only())
def err(f):
    try:
        f()
        return "ok"
    except nbd.Error as e:
        return errno.errorcode.get(e.errno, str(e.errno))
print("oor-read", err(lambda: h.pread(512, size - 256)))
print("oor-write", err(lambda: h.pwrite(b"x" * 512, size - 256)))
print("oor-zero", err(lambda: h.zero(4096, size)))
print("oor-trim", err(lambda: h.trim(4096, size)))
print("oor-cache", err(lambda: h.cache(4096, size)))
h.pwrite(b"\xab" * 1001, 12345)
print("unaligned", h.pread(1001, 12345) == b"\xab" * 1001, h.pread(3, 12344) == b"\x5a\xab\xab")
print("fast-zero", err(lambda: h.zero(1 << 20, 1 << 20, nbd.CMD_FLAG_FAST_ZERO)))
print("zero-nohole", err(lambda: h.zero(65536, 0, nbd.CMD_FLAG_NO_HOLE)), h.pread(65536, 0) == bytes(65536))
print("cache", err(lambda: h.cache(1 << 20, 0)))
chunks = []
h.pread_structured(1 << 20, 512 << 10, lambda buf, off, st, err: chunks.append((off, st, len(buf))) or 0, nbd.CMD_FLAG_DF)
print("df", chunks)
chunks = []
h.pread_structured(1 << 20, 512 << 10, lambda buf, off, st, err: chunks.append((off, st, len(buf))) or 0)
print("sparse", chunks)
ext = []
h.block_status(8 << 20, 0, lambda ctx, off, e, err: ext.extend(e) or 0, nbd.CMD_FLAG_REQ_ONE)
print("req-one", len(ext))
ext = []
h.block_status(8 << 20, 0, lambda ctx, off, e, err: ext.extend(e) or 0)
print("status", ext[:6])
h.flush()
h.shutdown()
`

// TestNbdshOddRequests (expectations checked against qemu-storage-daemon
// with the same script): out-of-range requests get errors without losing
// the connection, unaligned I/O works (minimum block size 1), FAST_ZERO,
// NO_HOLE, CACHE, DF and REQ_ONE behave as the protocol says.
func TestNbdshOddRequests(t *testing.T) {
	need(t, "qemu-img", "nbdsh")
	dir := t.TempDir()
	qcow := filepath.Join(dir, "a.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", qcow, "16M")
	run(t, "qemu-io", "-c", "write -P 0x5a 0 1M", qcow)
	s := start(t, dir, "--blockdev", qcow2Node("n", qcow),
		"--export", "type=nbd,id=e,node-name=n,name=disk,writable=on")
	out := run(t, "nbdsh", "-c", "URI = '"+s.uri("disk")+"'", "-c", nbdshScript)
	want := []string{
		"size 16777216",
		"flags True True True True True True True False",
		"oor-read EINVAL", "oor-write EINVAL", "oor-zero EINVAL", "oor-trim EINVAL", "oor-cache EINVAL",
		"unaligned True True",
		"zero-nohole ok True",
		"cache ok",
		"df [(524288, 1, 1048576)]", // one OFFSET_DATA chunk
		"sparse [(524288, 1, 524288), (1048576, 2, 524288)]", // data, then a hole
		"req-one 2", // one (length, flags) pair
		"status [65536, 3, 983040, 0, 7340032, 3]", // zeroed, data, zeroed
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("nbdsh output lacks %q:\n%s", w, out)
		}
	}
	// FAST_ZERO either zeroes quickly or says it cannot: never slowly.
	if !strings.Contains(out, "fast-zero ok") && !strings.Contains(out, "fast-zero ENOTSUP") {
		t.Errorf("fast zero: %s", out)
	}
	s.qmp.Close()
	s.Stop(t)
	run(t, "qemu-img", "check", "-q", qcow)
}
