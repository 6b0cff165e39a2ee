package tools

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"blockd/blockio"
)

// Tests of the tools on their own (no QEMU needed).

func TestCreateInfoCheck(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.qcow2")
	out := mustImg(t, "create", "-f", "qcow2", "-o", "cluster_size=4k,lazy_refcounts=on,refcount_bits=8", p, "1.5M")
	want := "Formatting '" + p + "', fmt=qcow2 cluster_size=4096 extended_l2=off compression_type=zlib size=1572864 lazy_refcounts=on refcount_bits=8\n"
	if out != want {
		t.Errorf("create printed %q, want %q", out, want)
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(mustImg(t, "info", "--output=json", p)), &info); err != nil {
		t.Fatal(err)
	}
	data := info["format-specific"].(map[string]any)["data"].(map[string]any)
	if info["virtual-size"].(float64) != 1572864 || info["cluster-size"].(float64) != 4096 ||
		data["lazy-refcounts"] != true || data["refcount-bits"].(float64) != 8 || data["compat"] != "1.1" {
		t.Errorf("info: %v", info)
	}
	if out := mustImg(t, "check", p); !strings.HasPrefix(out, "No errors were found on the image.\n") {
		t.Errorf("check: %s", out)
	}
	// Backing file: size taken from it, relative name resolved next to
	// the new image.
	top := filepath.Join(dir, "top.qcow2")
	mustImg(t, "create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", top)
	out = mustImg(t, "info", top)
	for _, s := range []string{"virtual size: 1.5 MiB (1572864 bytes)", "backing file: a.qcow2 (actual path: " + p + ")",
		"backing file format: qcow2"} {
		if !strings.Contains(out, s) {
			t.Errorf("info lacks %q:\n%s", s, out)
		}
	}
	chain := mustImg(t, "info", "--backing-chain", "--output=json", top)
	var list []map[string]any
	if err := json.Unmarshal([]byte(chain), &list); err != nil || len(list) != 2 || list[1]["filename"] != p {
		t.Errorf("backing chain: %v %s", err, chain)
	}
	raw := filepath.Join(dir, "r.raw")
	if out := mustImg(t, "create", raw, "1000"); out != "Formatting '"+raw+"', fmt=raw size=1000\n" {
		t.Errorf("raw create: %q", out)
	}
	if st, err := os.Stat(raw); err != nil || st.Size() != 1024 {
		t.Errorf("raw image: %v %v", st, err)
	}
}

func TestCreateErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.qcow2")
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"create", "-f", "qcow2", p}, p + ": Image creation needs a size parameter"},
		{[]string{"create", "-f", "qcow2", p, "1x"}, "Invalid image size specified"},
		{[]string{"create", "-f", "qcow2", p, "16E"}, "Must be between 0 and"},
		{[]string{"create", "-f", "vmdk", p, "1M"}, "Unknown file format 'vmdk'"},
		{[]string{"create", "-f", "qcow2", "-o", "foo=1", p, "1M"}, "Invalid parameter 'foo'"},
		{[]string{"create", "-f", "qcow2", "-o", "cluster_size=3000", p, "1M"}, "Cluster size must be a power of two"},
		{[]string{"create", "-f", "qcow2", "-o", "lazy_refcounts=maybe", p, "1M"}, "Parameter 'lazy_refcounts' expects 'on' or 'off'"},
		{[]string{"create", "-f", "qcow2", "-o", "compat=2", p, "1M"}, "Parameter 'version' does not accept value '2'"},
		{[]string{"create", "-f", "qcow2", "-o", "size=1M", p, "1M"}, "The image size must be specified only once"},
		{[]string{"create", "-f", "raw", "-b", "x", "-F", "raw", p, "1M"}, "Backing file not supported for file format 'raw'"},
		{[]string{"create", "-f", "qcow2", "-b", "missing", "-F", "qcow2", p, "1M"}, "Could not open backing image."},
		{[]string{"create", "-f", "qcow2", "-b", "x.qcow2", p, "1M"}, ""},
		{[]string{"create", "-f", "qcow2", filepath.Join(dir, "no", "dir.qcow2"), "1M"}, "Could not create"},
	} {
		r := img(t, c.args...)
		if r.code == 0 || !strings.Contains(r.err, c.msg) {
			t.Errorf("%v: want failure with %q, got %s", c.args, c.msg, r)
		}
	}
	// -u skips opening the backing file, which then needs a size.
	mustImg(t, "create", "-q", "-f", "qcow2", "-u", "-b", "missing", "-F", "qcow2", p, "1M")
}

func TestIOPatterns(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.qcow2")
	mustImg(t, "create", "-q", "-f", "qcow2", p, "4M")
	out := mustIO(t, p, "write -P 0xaa 0 1M", "read -P 0xaa 0 1M", "write -z 64k 64k", "read -P 0 64k 64k",
		"discard 128k 64k", "read -P 0 128k 64k", "flush", "length", "read -P 0xaa -s 512 -l 512 0 4k")
	lines := strings.Split(out, "\n")
	for i, want := range map[int]string{0: "wrote 1048576/1048576 bytes at offset 0", 2: "read 1048576/1048576 bytes at offset 0",
		4: "wrote 65536/65536 bytes at offset 65536", 8: "discard 65536/65536 bytes at offset 131072", 12: "4 MiB"} {
		if lines[i] != want {
			t.Errorf("line %d: %q, want %q\n%s", i, lines[i], want, out)
		}
	}
	if !strings.HasPrefix(lines[1], "1 MiB, 1 ops; ") {
		t.Errorf("report line: %q", lines[1])
	}
	// A failed verification: the message, the report, exit 1.
	r := bio(t, "", ioArgs(p, "read -P 0xab 4k 4k", "read -P 0xaa 0 4k")...)
	if r.code != 1 || !strings.HasPrefix(r.out, "Pattern verification failed at offset 4096, 4096 bytes\nread 4096/4096 bytes at offset 4096\n") {
		t.Errorf("bad pattern: %s", r)
	}
	// -q silences the reports, commands come from stdin without -c.
	r = bio(t, "write -P 7 2M 4k\nread -P 7 2M 4k\n\nread -P 8 2M 4k\n", "-q", p)
	if r.code != 1 || r.out != "Pattern verification failed at offset 2097152, 4096 bytes\n" {
		t.Errorf("stdin -q: %s", r)
	}
	// The write buffer is reused with what it holds: pattern changes and
	// growing requests still write the right bytes.
	mustIO(t, p, "write -P 1 3M 4k", "write -P 2 3M 2k", "write -P 2 3080k 8k", "write -P 1 3100k 16k", "write 3200k 1k",
		"read -q -P 2 3M 2k", "read -q -P 1 3074k 2k", "read -q -P 2 3080k 8k", "read -q -P 1 3100k 16k", "read -q -P 0xcd 3200k 1k")
	// Everything reaches the file: a fresh open reads it back.
	mustIO(t, p, "read -q -P 7 2M 4k", "read -q -P 0 64k 128k", "read -q -P 0xaa 192k 832k")
}

func TestIOErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.qcow2")
	mustImg(t, "create", "-q", "-f", "qcow2", p, "1M")
	for _, c := range []struct {
		cmd, out, err string
	}{
		{"read -P 0x1ff 0 4k", "0x1ff is not a valid pattern byte\n", ""},
		{"read -P zz 0 4k", "zz is not a valid pattern byte\n", ""},
		{"read 0 x", "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- x\n", ""},
		{"read 0 3G", "length cannot exceed 2147483136, given 3G\n", ""},
		{"read 1M 1", "read failed: Input/output error\n", ""},
		{"write 1M 4k", "write failed: Input/output error\n", ""},
		{"discard 0 5M", "discard failed: Input/output error\n", ""},
		{"read -s 1 0 4k", "read [-abCqv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at a specified offset\n", ""},
		{"read -P 1 -s 10 -l 5000 0 4k", "pattern verification range exceeds end of read data\n", ""},
		{"write -z -P 1 0 4k", "Only one of -z, -P, and -s can be specified at the same time\n", ""},
		{"write -u 0 4k", "-u requires -z to be specified\n", ""},
		{"write 0", "", "bad argument count 1 to write, expected at least 2 arguments\n"},
		{"flush now", "", "bad argument count 1 to flush, expected no arguments\n"},
		{"foo", "", "command \"foo\" not found\n"},
	} {
		r := bio(t, "", ioArgs(p, c.cmd)...)
		if r.code != 1 || r.out != c.out || r.err != c.err {
			t.Errorf("%q: got %s", c.cmd, r)
		}
	}
	for _, c := range []struct {
		args []string
		err  string
	}{
		{[]string{"-c", "flush", filepath.Join(dir, "nofile")}, "blockd io: can't open device " + filepath.Join(dir, "nofile") +
			": Could not open '" + filepath.Join(dir, "nofile") + "': No such file or directory\n"},
		{[]string{"-r", "-c", "write 0 4k", p}, "blockd io: Block node is read-only\n"},
		{[]string{"-U", "-c", "flush", p}, "blockd io: can't open device " + p + ": force-share=on can only be used with read-only images\n"},
		{[]string{"-f", "vmdk", "-c", "flush", p}, "blockd io: can't open device " + p + ": Unknown driver 'vmdk'\n"},
		{[]string{"-t", "fast", p}, "blockd io: Invalid cache option: fast\n"},
		{[]string{"-x", p}, "blockd io: invalid option -- 'x'\n"},
	} {
		r := bio(t, "", c.args...)
		if r.code != 1 || !strings.HasPrefix(r.err, c.err) {
			t.Errorf("%v: got %s", c.args, r)
		}
	}
	// A corrupt image: the header's L1 table points past the end of the
	// file. Every tool fails with a message, none panics.
	bad := filepath.Join(dir, "bad.qcow2")
	mustImg(t, "create", "-q", "-f", "qcow2", bad, "1M")
	f, err := os.OpenFile(bad, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], 1<<40)
	if _, err := f.WriteAt(b[:], 40); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if r := bio(t, "", ioArgs(bad, "read 0 4k")...); r.code != 1 || !strings.Contains(r.err, "can't open device") {
		t.Errorf("corrupt io: %s", r)
	}
	for _, args := range [][]string{{"info", bad}, {"map", bad}, {"check", bad}, {"compare", bad, p}} {
		if r := img(t, args...); r.code == 0 || !strings.Contains(r.err, "Could not open '"+bad+"'") {
			t.Errorf("corrupt %v: %s", args, r)
		}
	}
	// Not an image at all: probed as raw, and raw has no checks.
	txt := filepath.Join(dir, "t.txt")
	if err := os.WriteFile(txt, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := img(t, "check", txt); r.code != 63 || r.err != "blockd img: This image format does not support checks\n" {
		t.Errorf("check raw: %s", r)
	}
}

func TestCompare(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.raw"), filepath.Join(dir, "c.qcow2")
	mustImg(t, "create", "-q", "-f", "qcow2", a, "2M")
	mustImg(t, "create", "-q", "-f", "raw", b, "2M")
	mustImg(t, "create", "-q", "-f", "qcow2", c, "3M")
	mustIO(t, a, "write -P 5 64k 8k")
	mustIO(t, b, "write -P 5 64k 8k")
	if r := img(t, "compare", a, b); r.code != 0 || r.out != "Images are identical.\n" {
		t.Errorf("identical: %s", r)
	}
	mustIO(t, b, "write -P 6 70000 1")
	if r := img(t, "compare", a, b); r.code != 1 || r.out != "Content mismatch at offset 69632!\n" {
		t.Errorf("mismatch: %s", r)
	}
	if r := img(t, "compare", "-q", a, b); r.code != 1 || r.out != "" {
		t.Errorf("quiet: %s", r)
	}
	mustIO(t, c, "write -P 5 64k 8k")
	if r := img(t, "compare", a, c); r.code != 0 || r.out != "Warning: Image size mismatch!\nImages are identical.\n" {
		t.Errorf("size mismatch: %s", r)
	}
	if r := img(t, "compare", "-s", a, c); r.code != 1 || r.out != "Strict mode: Image size mismatch!\n" {
		t.Errorf("strict: %s", r)
	}
	mustIO(t, c, "write -P 1 2560k 512")
	if r := img(t, "compare", a, c); r.code != 1 || r.out != "Warning: Image size mismatch!\nContent mismatch at offset 2621440!\n" {
		t.Errorf("tail: %s", r)
	}
	if r := img(t, "compare", a); r.code != 2 {
		t.Errorf("one file: %s", r)
	}
}

// qcow2Layout reads where the first data cluster of a fresh image and its
// refcount live.
type qcow2Layout struct {
	l2, data, refblock int64
}

func readLayout(t *testing.T, p string) qcow2Layout {
	t.Helper()
	f, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	l1 := int64(be.Uint64(f[40:]))
	rt := int64(be.Uint64(f[48:]))
	const mask = 0x00fffffffffffe00
	var lay qcow2Layout
	lay.l2 = int64(be.Uint64(f[l1:]) & mask)
	lay.data = int64(be.Uint64(f[lay.l2:]) & mask)
	lay.refblock = int64(be.Uint64(f[rt:]) & mask)
	return lay
}

func TestCheckRepair(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.qcow2")
	mustImg(t, "create", "-q", "-f", "qcow2", p, "1M")
	mustIO(t, p, "write -P 1 0 64k")
	lay := readLayout(t, p)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	// A leak: the L2 entry goes, the refcount stays.
	if _, err := f.WriteAt(make([]byte, 8), lay.l2); err != nil {
		t.Fatal(err)
	}
	r := img(t, "check", "--output=json", p)
	var res map[string]any
	if err := json.Unmarshal([]byte(r.out), &res); r.code != 3 || err != nil || res["leaks"].(float64) != 1 {
		t.Fatalf("leak: %s", r)
	}
	if !strings.Contains(r.err, "Leaked cluster") {
		t.Errorf("no leak message: %s", r)
	}
	r = img(t, "check", "-r", "leaks", p)
	if r.code != 0 || !strings.Contains(r.out, "The following inconsistencies were found and repaired:\n\n    1 leaked clusters\n    0 corruptions\n") ||
		!strings.Contains(r.out, "No errors were found on the image.") {
		t.Errorf("repair leaks: %s", r)
	}

	// A corruption: the data cluster is referenced, its refcount is 0.
	mustIO(t, p, "write -P 2 0 64k")
	lay = readLayout(t, p)
	cs := int64(65536)
	if _, err := f.WriteAt(make([]byte, 2), lay.refblock+2*(lay.data/cs)); err != nil {
		t.Fatal(err)
	}
	r = img(t, "check", p)
	if r.code != 2 || !strings.Contains(r.out, "2 errors were found on the image.") {
		t.Fatalf("corruption: %s", r)
	}
	if r := img(t, "check", "-r", "leaks", p); r.code != 2 {
		t.Errorf("-r leaks must not repair corruptions: %s", r)
	}
	if r := img(t, "check", "-r", "all", p); r.code != 0 {
		t.Errorf("repair all: %s", r)
	}
	mustIO(t, p, "read -q -P 2 0 64k")
	if r := img(t, "check", "-r", "some", p); r.code != 1 {
		t.Errorf("bad -r: %s", r)
	}
}

// A user holding the image read-write keeps the tools out, except with
// -U (force share), as with QEMU's image locking.
func TestLocks(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.qcow2")
	mustImg(t, "create", "-q", "-f", "qcow2", p, "1M")
	held, err := openImage(openOptions{filename: p, format: "qcow2",
		perm: blockio.PermConsistentRead | blockio.PermWrite, shared: blockio.PermAll}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.close()
	hint := "\nIs another process using the image [" + p + "]?\n"
	r := bio(t, "", ioArgs(p, "read 0 4k")...)
	if r.code != 1 || r.err != "blockd io: can't open device "+p+": Failed to get \"write\" lock"+hint {
		t.Errorf("io: %s", r)
	}
	r = img(t, "info", p)
	if r.code != 1 || r.err != "blockd img: Could not open '"+p+"': Failed to get shared \"write\" lock"+hint {
		t.Errorf("info: %s", r)
	}
	for _, args := range [][]string{{"info", "-U", p}, {"map", "-U", p}, {"check", "-U", p}, {"compare", "-U", p, p}} {
		if r := img(t, args...); r.code != 0 {
			t.Errorf("%v: %s", args, r)
		}
	}
	if r := bio(t, "", "-r", "-U", "-c", "read 0 4k", p); r.code != 0 {
		t.Errorf("io -r -U: %s", r)
	}
	if r := img(t, "create", "-f", "qcow2", p, "1M"); r.code != 1 || !strings.Contains(r.err, "Failed to get \"write\" lock") {
		t.Errorf("create over a used image: %s", r)
	}
}

func TestDispatch(t *testing.T) {
	if _, ok := Dispatch(nil); ok {
		t.Error("empty command line handled")
	}
	if _, ok := Dispatch([]string{"--socket", "x"}); ok {
		t.Error("daemon options handled")
	}
	if r := img(t, "frobnicate"); r.code != 1 || r.err != "blockd img: Command not found: frobnicate\n" {
		t.Errorf("unknown: %s", r)
	}
	if r := img(t, "--help"); r.code != 0 || !strings.Contains(r.out, "create") {
		t.Errorf("help: %s", r)
	}
	if r := bio(t, "", "--help"); r.code != 0 || !strings.Contains(r.out, "Usage: blockd io") {
		t.Errorf("io help: %s", r)
	}
}

// The hook in cmd/blockd: `blockd img` and `blockd io` reach the tools,
// anything else still reaches the daemon's argument parsing.
func TestBinaryDispatch(t *testing.T) {
	bin := blockdBinary(t)
	p := filepath.Join(t.TempDir(), "a.qcow2")
	out, err := exec.Command(bin, "img", "create", "-f", "qcow2", p, "1M").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "Formatting '"+p+"', fmt=qcow2 ") {
		t.Fatalf("blockd img create: %v %s", err, out)
	}
	out, err = exec.Command(bin, "io", "-c", "write -P 9 0 4k", "-c", "read -P 9 0 4k", p).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "read 4096/4096 bytes at offset 0") {
		t.Fatalf("blockd io: %v %s", err, out)
	}
	out, err = exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "blockd version ") {
		t.Fatalf("blockd --version: %v %s", err, out)
	}
}
