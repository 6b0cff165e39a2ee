package tools

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"blockd/blockio"
)

// Interop with qemu-img and qemu-io 7.2: the same images described by
// both tools, the same writes made by both, the same errors.

// imageSet makes a set of images with one tool: every qcow2 variant the
// engine supports, a raw image and a backing chain whose map has data in
// both layers, zero clusters, unallocated ranges and sub-cluster writes.
// create and io are the tool's create and -c runner.
func imageSet(t *testing.T, dir, prefix string, create func(args ...string), io func(fmt, img string, cmds ...string)) []string {
	p := func(name string) string { return filepath.Join(dir, prefix+name) }
	create("-f", "qcow2", p("default.qcow2"), "64M")
	create("-f", "qcow2", "-o", "compat=0.10", p("v2.qcow2"), "64M")
	create("-f", "qcow2", "-o", "cluster_size=4k,lazy_refcounts=on,refcount_bits=8", p("small.qcow2"), "16M")
	create("-f", "qcow2", "-o", "extended_l2=on", p("extl2.qcow2"), "16M")
	create("-f", "raw", p("disk.raw"), "8M")
	create("-f", "qcow2", p("base.qcow2"), "8M")
	create("-f", "qcow2", "-b", prefix+"base.qcow2", "-F", "qcow2", p("top.qcow2"))
	create("-f", "qcow2", "-b", prefix+"disk.raw", "-F", "raw", p("overraw.qcow2"), "12M")
	data := []string{"write -P 0xaa 0 1M", "write -z 1M 64k", "write -P 1 2M 64k", "discard 2M 64k",
		"write -P 3 5000 3000", "write -P 4 6M 200k"}
	for _, name := range []string{"default.qcow2", "v2.qcow2", "small.qcow2", "extl2.qcow2", "base.qcow2"} {
		io("qcow2", p(name), data...)
	}
	io("raw", p("disk.raw"), "write -P 0xaa 0 1M", "write -P 5 4M 4k")
	io("qcow2", p("top.qcow2"), "write -P 1 512k 64k", "write -z 3M 128k", "write -P 2 4M 100", "write -z 7M 1M")
	io("qcow2", p("overraw.qcow2"), "write -P 1 64k 64k", "write -P 2 9M 64k")
	var out []string
	for _, n := range []string{"default.qcow2", "v2.qcow2", "small.qcow2", "extl2.qcow2", "disk.raw", "base.qcow2", "top.qcow2", "overraw.qcow2"} {
		out = append(out, p(n))
	}
	return out
}

func TestQemuImgAgrees(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	var images []string
	images = append(images, imageSet(t, dir, "q-",
		func(args ...string) { mustQemu(t, dir, "qemu-img", append([]string{"create", "-q"}, args...)...) },
		func(format, image string, cmds ...string) {
			mustQemu(t, dir, "qemu-io", append([]string{"-f", format}, ioArgs(image, cmds...)...)...)
		})...)
	images = append(images, imageSet(t, dir, "b-",
		func(args ...string) { mustImg(t, append([]string{"create", "-q"}, args...)...) },
		func(format, image string, cmds ...string) { mustIO(t, image, cmds...) })...)
	for _, image := range images {
		for _, args := range [][]string{
			{"info", "--output=json"}, {"info"}, {"info", "--backing-chain", "--output=json"}, {"info", "--backing-chain"},
			{"map", "--output=json"}, {"map"}, {"map", "--output=json", "-s", "64k", "-l", "3M"},
			{"check", "--output=json"}, {"check"},
		} {
			args := append(args, image)
			want := qemuRun(dir, "qemu-img", args...)
			got := img(t, args...)
			if why := knownDifference(image, args); why != "" {
				if got.out != want.out {
					t.Logf("KNOWN DIFFERENCE %s %v (%s)", filepath.Base(image), args[:len(args)-1], why)
				}
				continue
			}
			if got.out != want.out || got.code != want.code {
				t.Errorf("%s %v:\nblockd img: %s\nqemu-img:   %s", filepath.Base(image), args[:len(args)-1], got, want)
			}
		}
	}
	// And compare says what qemu-img compare says, on pairs made by the
	// same and by different tools.
	pairs := [][2]string{}
	for i := 0; i < len(images)/2; i++ {
		pairs = append(pairs, [2]string{images[i], images[i+len(images)/2]})
	}
	pairs = append(pairs, [2]string{images[0], images[1]}, [2]string{images[5], images[6]},
		[2]string{images[4], images[7]}, [2]string{images[12], images[15]}, [2]string{images[6], images[14]})
	for _, pr := range pairs {
		want := qemuRun(dir, "qemu-img", "compare", pr[0], pr[1])
		got := img(t, "compare", pr[0], pr[1])
		if got.out != want.out || got.code != want.code {
			t.Errorf("compare %s %s:\nblockd img: %s\nqemu-img:   %s", filepath.Base(pr[0]), filepath.Base(pr[1]), got, want)
		}
	}
}

// knownDifference names outputs where blockd's drivers are known to
// answer differently from QEMU, so the comparison logs them instead of
// failing. None is known at present.
func knownDifference(image string, args []string) string {
	_, _ = image, args
	return ""
}

// reportTimes matches the second line of a qemu-io report, which holds
// timings.
var (
	reportTimes  = regexp.MustCompile(`(?m)^[0-9.]+ (bytes|KiB|MiB|GiB), 1 ops; .*$`)
	machineTimes = regexp.MustCompile(`(?m)^([0-9]+),1,[0-9:.]+,[0-9.]+,[0-9.]+$`)
)

func filterTimes(s string) string {
	s = machineTimes.ReplaceAllString(s, "$1,1,TIMES")
	return reportTimes.ReplaceAllString(s, "X ops; TIMES")
}

// guestMap is qemu-img map's JSON without host offsets, adjacent ranges
// with the same status merged: what the guest sees, wherever the
// clusters are in the file.
func guestMap(t *testing.T, out string) []map[string]any {
	t.Helper()
	var entries []map[string]any
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var merged []map[string]any
	for _, e := range entries {
		delete(e, "offset")
		if n := len(merged); n > 0 {
			last := merged[n-1]
			same := true
			for _, k := range []string{"depth", "present", "zero", "data"} {
				same = same && last[k] == e[k]
			}
			if same {
				last["length"] = last["length"].(float64) + e["length"].(float64)
				continue
			}
		}
		merged = append(merged, e)
	}
	return merged
}

var ioScript = []string{
	"write -P 0xaa 0 1M",
	"write -P 0x11 100k 5000",
	"write -z 256k 192k",
	"write -z -u 512k 64k",
	"discard 640k 128k",
	"write -P 0x22 1000000 70000",
	"read -P 0xaa 0 100k",
	"read -P 0x11 102400 5000",
	"read -P 0 256k 192k",
	"read -P 0 640k 128k",
	"flush",
	"write -f -P 0x33 2M 4k",
	"read -P 0x33 2M 4k",
	"read -P 0 3M 64k",
	"write 5M 512",
	"read -P 0xcd 5M 512",
	"read -v 5M 32",
	"length",
	"read -P 0x44 0 4k",
	"write -z 7M 2M",
	"read 8M 1",
	"write -c -P 0x55 6M 64k",
	"write -c -P 0x56 6M 64k",
	"write -c -P 0x57 6144k 192k",
	"write -c 6M 1000",
	"write -c -f 6M 64k",
	"write -c -z 7M 64k",
	"write -c -P 0x58 7M 64k",
	"read -P 0x55 6M 64k",
	"read -P 0x58 7M 64k",
}

// The same qemu-io commands, run by blockd io and by qemu-io on images
// qemu-img made (alone and over a backing file): the same output except
// for timings, images that qemu-img check finds clean and that both
// compare tools find identical.
func TestQemuIOSameWrites(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	for _, backing := range []bool{false, true} {
		var imgs [2]string
		var outs [2]result
		for i, tool := range []string{"blockd", "qemu"} {
			imgs[i] = filepath.Join(dir, tool+".qcow2")
			args := []string{"create", "-q", "-f", "qcow2", imgs[i], "8M"}
			if backing {
				base := filepath.Join(dir, tool+"-base.qcow2")
				mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", base, "8M")
				mustQemu(t, dir, "qemu-io", "-f", "qcow2", "-c", "write -P 0x77 0 8M", base)
				args = []string{"create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", imgs[i]}
			}
			mustQemu(t, dir, "qemu-img", args...)
			if tool == "blockd" {
				outs[i] = bio(t, "", append([]string{"-f", "qcow2"}, ioArgs(imgs[i], ioScript...)...)...)
			} else {
				outs[i] = qemuRun(dir, "qemu-io", append([]string{"-f", "qcow2"}, ioArgs(imgs[i], ioScript...)...)...)
			}
		}
		got, want := outs[0], outs[1]
		if filterTimes(got.out) != filterTimes(want.out) || got.code != want.code ||
			strings.ReplaceAll(got.err, "blockd io", "qemu-io") != want.err {
			t.Errorf("backing=%v:\nblockd io: %s\nqemu-io:   %s", backing, got, want)
		}
		if r := qemuRun(dir, "qemu-img", "check", imgs[0]); r.code != 0 {
			t.Errorf("qemu-img check of blockd's image: %s", r)
		}
		if r := qemuRun(dir, "qemu-img", "compare", imgs[0], imgs[1]); r.code != 0 {
			t.Errorf("qemu-img compare: %s", r)
		}
		if r := img(t, "compare", imgs[0], imgs[1]); r.code != 0 {
			t.Errorf("blockd img compare: %s", r)
		}
		// Same guest-visible layout: data, zero and unallocated ranges
		// agree, wherever the clusters landed in the files.
		m0 := guestMap(t, mustQemu(t, dir, "qemu-img", "map", "--output=json", imgs[0]))
		m1 := guestMap(t, mustQemu(t, dir, "qemu-img", "map", "--output=json", imgs[1]))
		if !reflect.DeepEqual(m0, m1) {
			t.Errorf("backing=%v: maps differ:\nblockd io:\n%s\nqemu-io:\n%s", backing, m0, m1)
		}
	}
}

// Errors: the same texts (with the program name changed) and the same
// exit codes as qemu-img and qemu-io.
func TestQemuSameErrors(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	q := filepath.Join(dir, "a.qcow2")
	raw := filepath.Join(dir, "a.raw")
	missing := filepath.Join(dir, "missing.qcow2")
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", q, "4M")
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "raw", raw, "4M")
	newImg := filepath.Join(dir, "new.qcow2")
	for _, args := range [][]string{
		{"info", missing}, {"map", missing}, {"check", missing}, {"compare", q, missing},
		{"check", raw}, {"check", "-f", "raw", q},
		{"info", "--output=yaml", q},
		{"create", "-f", "qcow2", newImg},
		{"create", "-f", "qcow2", newImg, "1x"},
		{"create", "-f", "qcow2", "-o", "foo=1", newImg, "1M"},
		{"create", "-f", "qcow2", "-o", "cluster_size=3000", newImg, "1M"},
		{"create", "-f", "qcow2", "-o", "refcount_bits=3", newImg, "1M"},
		{"create", "-f", "qcow2", "-o", "lazy_refcounts=on,compat=0.10", newImg, "1M"},
		{"create", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=4k", newImg, "1M"},
		{"create", "-f", "raw", "-b", q, "-F", "qcow2", newImg, "1M"},
		{"create", "-f", "qcow2", "-b", missing, "-F", "qcow2", newImg, "1M"},
		{"create", "-f", "qcow2", "-b", q, newImg, "1M"},
		{"create", "-f", "qcow2", "-b", q, "-F", "raw", newImg},
		{"compare", q, raw},
	} {
		want := qemuRun(dir, "qemu-img", args...)
		got := img(t, args...)
		if got.code != want.code || got.out != want.out ||
			strings.ReplaceAll(got.err, "blockd img", "qemu-img") != want.err {
			t.Errorf("%v:\nblockd img: %s\nqemu-img:   %s", args, got, want)
		}
	}
	for _, cmds := range [][]string{
		{"read -P 0x1ff 0 4k"}, {"read -P 1 0 4k"}, {"read 4M 1"}, {"write 0"}, {"foo"}, {"read 0 x"},
		{"read 0 3G"}, {"discard 0 5M"}, {"read -s 1 0 4k"}, {"write -z -P 1 0 4k"}, {"write -u 0 4k"},
		{"read -P 1 -s 10 -l 5000 0 4k"}, {"read 4M 0"}, {"read -C 0 4k"},
	} {
		want := qemuRun(dir, "qemu-io", ioArgs(q, cmds...)...)
		got := bio(t, "", ioArgs(q, cmds...)...)
		if filterTimes(got.out) != filterTimes(want.out) || got.code != want.code ||
			strings.ReplaceAll(got.err, "blockd io", "qemu-io") != want.err {
			t.Errorf("%v:\nblockd io: %s\nqemu-io:   %s", cmds, got, want)
		}
	}
	for _, args := range [][]string{
		{"-c", "flush", missing}, {"-r", "-c", "write 0 4k", q}, {"-U", "-c", "flush", q},
	} {
		want := qemuRun(dir, "qemu-io", args...)
		got := bio(t, "", args...)
		if got.code != want.code || strings.ReplaceAll(got.err, "blockd io", "qemu-io") != want.err {
			t.Errorf("%v:\nblockd io: %s\nqemu-io:   %s", args, got, want)
		}
	}
}

// Image locks are QEMU's: a qemu-io writer keeps blockd's tools out (and
// the reverse) with the same messages, and -U gets in.
func TestQemuLocks(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "a.qcow2")
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
	release := holdWithQemuIO(t, dir, p)
	defer release()
	for _, c := range []struct {
		tool string
		args []string
	}{
		{"io", ioArgs(p, "read 0 4k")},
		{"io", append([]string{"-r"}, ioArgs(p, "read 0 4k")...)},
		{"img", []string{"info", p}},
		{"img", []string{"check", p}},
		{"img", []string{"info", "-U", "--output=json", p}},
		{"img", []string{"map", "-U", "--output=json", p}},
	} {
		var got, want result
		if c.tool == "io" {
			got, want = bio(t, "", c.args...), qemuRun(dir, "qemu-io", c.args...)
		} else {
			got, want = img(t, c.args...), qemuRun(dir, "qemu-img", c.args...)
		}
		name := "blockd " + c.tool
		if filterTimes(got.out) != filterTimes(want.out) || got.code != want.code ||
			strings.ReplaceAll(got.err, name, "qemu-"+c.tool) != want.err {
			t.Errorf("%s %v:\n%s: %s\nqemu: %s", c.tool, c.args, name, got, want)
		}
	}
	release()

	// blockd holding the image read-write: qemu-io and qemu-img stay out.
	held, err := openImage(openOptions{filename: p, format: "qcow2",
		perm: blockio.PermConsistentRead | blockio.PermWrite, shared: blockio.PermAll}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.close()
	if r := qemuRun(dir, "qemu-io", "-c", "read 0 4k", p); r.code != 1 || !strings.Contains(r.err, `Failed to get "write" lock`) {
		t.Errorf("qemu-io on a held image: %s", r)
	}
	if r := qemuRun(dir, "qemu-img", "info", "-U", "--output=json", p); r.code != 0 {
		t.Errorf("qemu-img info -U: %s", r)
	} else {
		var m map[string]any
		if err := json.Unmarshal([]byte(r.out), &m); err != nil || m["format"] != "qcow2" {
			t.Errorf("qemu-img info -U: %v %s", err, r.out)
		}
	}
}

// Compressed clusters (written by qemu-io: blockd io does not compress):
// map shows data without an offset, and the human map refuses them, as
// qemu-img map does; check counts them.
func TestQemuCompressed(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "compressed.qcow2")
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
	mustQemu(t, dir, "qemu-io", "-f", "qcow2", "-c", "write -c -P 7 0 64k", "-c", "write -P 8 64k 64k", p)
	for _, args := range [][]string{{"map", "--output=json"}, {"map"}, {"check", "--output=json"}, {"check"}, {"info", "--output=json"}} {
		args := append(args, p)
		want := qemuRun(dir, "qemu-img", args...)
		got := img(t, args...)
		if why := knownDifference(p, args); why != "" {
			if got.out != want.out {
				t.Logf("KNOWN DIFFERENCE %v (%s)", args[:len(args)-1], why)
			}
			continue
		}
		if got.out != want.out || got.code != want.code || strings.ReplaceAll(got.err, "blockd img", "qemu-img") != want.err {
			t.Errorf("%v:\nblockd img: %s\nqemu-img:   %s", args[:len(args)-1], got, want)
		}
	}
	mustIO(t, p, "read -q -P 7 0 64k", "read -q -P 8 64k 64k")
}

// holdWithQemuIO starts qemu-io on a qcow2 image, which then holds its
// write lock until the returned function is called (more than once is fine).
func holdWithQemuIO(t *testing.T, dir, p string) (release func()) {
	t.Helper()
	cmd := exec.Command("qemu-io", "-f", "qcow2", p)
	cmd.Dir = dir
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { stdin.Close(); _ = cmd.Wait() }) }
	// qemu-io answers a command only once the image is open with its
	// locks: wait for that answer rather than probing the lock from
	// outside, and say what qemu-io printed if it never comes.
	ready := make(chan error, 1)
	var seen strings.Builder
	go func() {
		r := bufio.NewReader(stdout)
		if _, err := io.WriteString(stdin, "length\n"); err != nil {
			ready <- err
			return
		}
		for {
			line, err := r.ReadString('\n')
			seen.WriteString(line)
			if err != nil {
				ready <- fmt.Errorf("%v; output: %q", err, seen.String())
				return
			}
			if strings.Contains(line, "MiB") {
				ready <- nil
				_, _ = io.Copy(io.Discard, r)
				return
			}
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			release()
			t.Fatalf("qemu-io did not open %s: %v", p, err)
		}
	case <-time.After(60 * time.Second):
		release()
		t.Fatalf("qemu-io did not open %s within 60s", p)
	}
	return release
}
