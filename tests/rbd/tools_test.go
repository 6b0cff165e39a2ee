package rbdtest

import (
	"os/exec"
	"strings"
	"testing"
)

// blockd's image tools take rbd: filenames as qemu-img does: info and
// map print what qemu-img prints, and blockd io's writes read back
// through qemu-io.
func TestToolsOnRBDFilenames(t *testing.T) {
	conf := needCluster(t)
	dir := t.TempDir()
	img := newImage(t, 16<<20)
	uri := qemuURI(conf, img)
	blockd := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(blockdBin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("blockd %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	blockd("io", "-c", "write -P 0x5c 0 1M", "-c", "write -P 0x5d 9M 64k", uri)
	tool(t, dir, "qemu-io", "-f", "raw", "-r", "-c", "read -P 0x5c 0 1M", "-c", "read -P 0x5d 9M 64k", uri)
	for _, args := range [][]string{
		{"info", "--output=json", "-f", "raw", uri},
		{"map", "--output=json", "-f", "raw", uri},
	} {
		got := blockd(append([]string{"img"}, args...)...)
		want := tool(t, dir, "qemu-img", args...)
		if got != want {
			t.Errorf("img %s:\n blockd:   %s\n qemu-img: %s", args[0], got, want)
		}
	}
	out, err := exec.Command(blockdBin, "img", "info", "rbd:rbd/"+img+":conf="+conf+":rbd_cache=false").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "blockd does not support Ceph options in rbd: filenames ('rbd_cache')") {
		t.Fatalf("img info with a Ceph option: %v\n%s", err, out)
	}
}
