// Package nbdtest is the NBD interop suite: blockd's exports against
// qemu-img, qemu-io, nbdinfo, nbdcopy and nbdsh, TLS against qemu-img, an
// active commit under NBD writes, and the export commands over QMP. It is
// its own package so that CI runs it beside the others.
package nbdtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	qmptest "blockd/tests/qmp"
)

var blockdBin string

func TestMain(m *testing.M) { qmptest.RunWithBlockd(m, &blockdBin) }

// need finds a tool or skips loudly (fails with BLOCKD_REQUIRE_QEMU=1).
func need(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv("BLOCKD_REQUIRE_QEMU") == "1" {
				t.Fatalf("%s not found and BLOCKD_REQUIRE_QEMU=1: %v", name, err)
			}
			t.Skipf("SKIP LOUDLY: %s not installed; NBD interop untested (set BLOCKD_REQUIRE_QEMU=1 to fail instead)", name)
		}
	}
}

// run runs a tool and returns its output; failure fails the test.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	// nbdsh runs "python3 -m nbd": the system's python3 has the module.
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin:"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// server is a blockd with an NBD server on a Unix socket.
type server struct {
	*qmptest.Daemon
	nbdSock string
	qmp     *qmptest.Client
}

// start runs blockd with the given extra options and an NBD server.
func start(t *testing.T, dir string, extra ...string) *server {
	t.Helper()
	return startNBD(t, dir, "", extra...)
}

// startNBD is start with more --nbd-server options (",tls-creds=...").
func startNBD(t *testing.T, dir, nbdOpts string, extra ...string) *server {
	t.Helper()
	sock := filepath.Join(dir, "nbd.sock")
	args := append([]string{"--nbd-server", "addr.type=unix,addr.path=" + sock + nbdOpts}, extra...)
	d, c := qmptest.StartSession(t, blockdBin, dir, args...)
	return &server{Daemon: d, nbdSock: sock, qmp: c}
}

// cmd runs a QMP command that must succeed.
func (s *server) cmd(t *testing.T, name string, args any) any {
	t.Helper()
	return s.qmp.Ok(t, name, args)
}

// cmdErr runs a QMP command that must fail and returns its desc.
func (s *server) cmdErr(t *testing.T, name string, args any) string {
	t.Helper()
	return s.qmp.Err(t, name, args)
}

func (s *server) uri(name string) string {
	return fmt.Sprintf("nbd+unix:///%s?socket=%s", name, s.nbdSock)
}

// qcow2Node is a --blockdev for a qcow2 image.
func qcow2Node(name, path string) string {
	return fmt.Sprintf(`{"driver":"qcow2","node-name":"%s","file":{"driver":"file","filename":"%s"}}`, name, path)
}

// dialNBD connects a raw socket to the server.
func (s *server) dial(t *testing.T) net.Conn {
	t.Helper()
	nc, err := net.Dial("unix", s.nbdSock)
	if err != nil {
		t.Fatal(err)
	}
	return nc
}
