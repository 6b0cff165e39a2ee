package nbdtest

import (
	"crypto/rand"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"blockd/nbd"
)

// TestBadClientsDaemon: against the daemon, a client sending garbage, one
// leaving in the middle of a write payload, a thousand idle connections
// and one that never reads its replies; qemu-io keeps its service
// throughout, the daemon's descriptors return to where they were, and
// the image is clean afterwards.
func TestBadClientsDaemon(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	qcow := filepath.Join(dir, "a.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", qcow, "64M")
	pidfile := filepath.Join(dir, "pid")
	s := start(t, dir, "--pidfile", pidfile, "--blockdev", qcow2Node("n", qcow),
		"--export", "type=nbd,id=e,node-name=n,name=disk,writable=on")
	fds := fdCounter(t, pidfile)
	f0 := fds()
	served := func(what string) {
		t.Helper()
		out := run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x66 1M 64k", "-c", "read -P 0x66 1M 64k", s.uri("disk"))
		if strings.Contains(out, "fail") {
			t.Fatalf("%s: qemu-io lost its service: %s", what, out)
		}
	}

	nc := s.dial(t)
	junk := make([]byte, 8192)
	_, _ = rand.Read(junk)
	_, _ = nc.Write(junk)
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, nc); err != nil {
		t.Fatalf("garbage did not get the connection closed: %v", err)
	}
	nc.Close()
	served("garbage")

	half, err := nbd.Connect(s.dial(t), "disk")
	if err != nil {
		t.Fatal(err)
	}
	hc := half.Conn()
	_, _ = hc.Write(append(nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdWrite, Offset: 4 << 20, Length: 1 << 20}), make([]byte, 5000)...))
	hc.Close()
	served("half write")

	deaf, err := nbd.Connect(s.dial(t), "disk")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		r := nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdRead, Length: 1 << 20})
		for i := 0; i < 512; i++ {
			if _, err := deaf.Conn().Write(r); err != nil {
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	served("deaf client")

	var idle []net.Conn
	for i := 0; i < 1000; i++ {
		c, err := net.Dial("unix", s.nbdSock)
		if err != nil {
			break
		}
		idle = append(idle, c)
	}
	if len(idle) < 200 {
		t.Fatalf("only %d connections", len(idle))
	}
	served(strconv.Itoa(len(idle)) + " idle connections")
	for _, c := range idle {
		c.Close()
	}
	deaf.Conn().Close()
	deadline := time.Now().Add(20 * time.Second)
	for fds() > f0 {
		if time.Now().After(deadline) {
			t.Fatalf("daemon holds %d descriptors, %d before the bad clients", fds(), f0)
		}
		time.Sleep(20 * time.Millisecond)
	}
	served("after")
	s.qmp.Close()
	s.Stop(t)
	run(t, "qemu-img", "check", "-q", qcow)
	if out := run(t, "qemu-io", "-r", "-c", "read -P 0 4M 1M", qcow); strings.Contains(out, "fail") {
		t.Fatalf("the half-sent write reached the image: %s", out)
	}
}
