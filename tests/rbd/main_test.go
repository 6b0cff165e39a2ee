// Package rbdtest is the rbd suite: blockd's rbd driver against a real
// single-node Ceph cluster (tests/ceph/start.sh), qemu-storage-daemon's
// transcripts, qemu-img and qemu-io through librbd, NBD exports, commits
// into rbd and a crash during one. Ceph's monitor port is fixed, so every
// test that needs the cluster lives in this one package and they run one
// after the other; TestMain starts the cluster when none is running and
// stops it at the end.
package rbdtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"blockd/internal/needtool"
	"blockd/internal/racechild"
	qmptest "blockd/tests/qmp"
)

var (
	blockdBin string
	// cephConf is the cluster's configuration file, "" without a cluster.
	cephConf string
	// clusterErr says why there is no cluster.
	clusterErr string
)

const defaultCephDir = "/tmp/blockd-ceph"

func TestMain(m *testing.M) {
	racechild.NoExitSleep()
	dir, err := os.MkdirTemp("", "blockd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	blockdBin, err = qmptest.BuildBlockd(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	stop := startCluster()
	code := m.Run()
	stop()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// startCluster finds a running cluster (BLOCKD_CEPH_CONF, or the one
// tests/ceph/start.sh leaves in /tmp/blockd-ceph) or starts one, and
// returns what stops what it started.
func startCluster() (stop func()) {
	stop = func() {}
	conf := os.Getenv("BLOCKD_CEPH_CONF")
	if conf == "" {
		conf = filepath.Join(defaultCephDir, "ceph.conf")
	}
	if clusterUp(conf) {
		cephConf = conf
		os.Setenv("BLOCKD_CEPH_CONF", conf)
		return stop
	}
	for _, tool := range []string{"ceph-mon", "ceph-osd", "ceph", "rbd"} {
		if _, err := exec.LookPath(tool); err != nil {
			clusterErr = tool + " not installed (apt-get install --no-install-recommends ceph-mon ceph-osd ceph-common)"
			return stop
		}
	}
	script, _ := filepath.Abs("../ceph/start.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, script).Output()
	if err != nil {
		clusterErr = fmt.Sprintf("tests/ceph/start.sh: %v", err)
		return stop
	}
	cephConf = strings.TrimSpace(string(out))
	os.Setenv("BLOCKD_CEPH_CONF", cephConf)
	stopScript, _ := filepath.Abs("../ceph/stop.sh")
	return func() { _ = exec.Command(stopScript).Run() }
}

// clusterUp: a cluster answers with this configuration.
func clusterUp(conf string) bool {
	if _, err := os.Stat(conf); err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "rbd", "-c", conf, "ls", "rbd").Run() == nil
}

// needCluster skips loudly without a cluster (fails under
// BLOCKD_REQUIRE_QEMU=1) and returns its configuration file.
func needCluster(t testing.TB) string {
	t.Helper()
	if cephConf == "" {
		needtool.Missing(t, "no Ceph cluster: "+clusterErr)
	}
	return cephConf
}

var imageSeq atomic.Int64

// newImage creates an rbd image of size bytes in pool rbd with a name
// unique to the run, removed when the test ends.
func newImage(t testing.TB, size int64, extra ...string) string {
	t.Helper()
	conf := needCluster(t)
	name := fmt.Sprintf("t%d-%d", os.Getpid(), imageSeq.Add(1))
	args := append([]string{"-c", conf, "create", "--size", fmt.Sprintf("%dB", size)}, extra...)
	rbdCmd(t, append(args, "rbd/"+name)...)
	t.Cleanup(func() {
		// An image a killed client still watches cannot be removed until
		// its watch times out (30 s); the cluster is thrown away anyway.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = exec.CommandContext(ctx, "rbd", "-c", conf, "snap", "purge", "rbd/"+name).Run()
		_ = exec.CommandContext(ctx, "rbd", "-c", conf, "rm", "--no-progress", "rbd/"+name).Run()
	})
	return name
}

// rbdCmd runs the rbd tool; failure fails the test.
func rbdCmd(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rbd", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rbd %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// qemuURI is the image as QEMU's tools name it (rbd: with conf).
func qemuURI(conf, image string) string {
	return "rbd:rbd/" + image + ":conf=" + conf
}

// blockdevJSON is the rbd node's blockdev-add options.
func blockdevJSON(node, conf, image string) string {
	return fmt.Sprintf(`{"driver":"rbd","node-name":%q,"pool":"rbd","image":%q,"conf":%q}`, node, image, conf)
}
