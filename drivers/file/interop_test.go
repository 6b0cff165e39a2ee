package file

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// qcow2Image creates a qcow2 image with qemu-img, so that QEMU's tools
// open it with a qcow2 node whose file child unshares write and resize.
func qcow2Image(t *testing.T) string {
	qemuImg := qemuTool(t, "qemu-img")
	p := filepath.Join(t.TempDir(), "img.qcow2")
	if out, ok := run(t, qemuImg, "create", "-f", "qcow2", p, "16M"); !ok {
		t.Fatalf("qemu-img create: %s", out)
	}
	return p
}

// QEMU tools are refused while a File holds what a qcow2 parent takes.
func TestInteropQemuBlockedByFile(t *testing.T) {
	qemuIO := qemuTool(t, "qemu-io")
	qemuImg := qemuTool(t, "qemu-img")
	p := qcow2Image(t)
	f := mustOpen(t, Options{Filename: p})
	if err := f.SetPerm(permQcow2Parent, sharedQcow2Parent); err != nil {
		t.Fatal(err)
	}

	out, ok := run(t, qemuIO, "-c", "write 0 64k", p)
	if ok || !contains(out, `Failed to get "write" lock`) {
		t.Fatalf("qemu-io write while locked: ok=%v\n%s", ok, out)
	}
	out, ok = run(t, qemuImg, "info", p)
	if ok || !contains(out, `Failed to get shared "write" lock`) {
		t.Fatalf("qemu-img info while locked: ok=%v\n%s", ok, out)
	}
	if out, ok = run(t, qemuImg, "info", "-U", p); !ok {
		t.Fatalf("qemu-img info -U while locked: %s", out)
	}

	f.Close()
	if out, ok = run(t, qemuIO, "-c", "write 0 64k", p); !ok {
		t.Fatalf("qemu-io write after Close: %s", out)
	}
	if out, ok = run(t, qemuImg, "info", p); !ok {
		t.Fatalf("qemu-img info after Close: %s", out)
	}
}

func TestInteropReaders(t *testing.T) {
	qemuIO := qemuTool(t, "qemu-io")
	p := qcow2Image(t)
	f := mustOpen(t, Options{Filename: p})
	if err := f.SetPerm(cr, all); err != nil {
		t.Fatal(err)
	}
	if out, ok := run(t, qemuIO, "-r", "-c", "read 0 4k", p); !ok {
		t.Fatalf("qemu-io -r next to a consistent-read holder: %s", out)
	}
	// Unsharing consistent read shuts readers out, with QEMU's wording.
	if err := f.SetPerm(0, all&^cr); err != nil {
		t.Fatal(err)
	}
	out, ok := run(t, qemuIO, "-r", "-f", "raw", "-c", "read 0 4k", p)
	if ok || !contains(out, `Failed to get "consistent read" lock`) {
		t.Fatalf("qemu-io -r while consistent read is unshared: ok=%v\n%s", ok, out)
	}
}

// A File is refused while a QEMU process holds the image for writing.
func TestInteropFileBlockedByQemu(t *testing.T) {
	qemuIO := qemuTool(t, "qemu-io")
	p := qcow2Image(t)
	cmd := exec.Command(qemuIO, "-c", "sleep 20000", p)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })

	// qemu-io on a qcow2 image: perm consistent-read|write|resize,
	// shared consistent-read|write-unchanged.
	want := lockBytes{perm: cr | wr | resize, unshared: wr | resize}
	for deadline := time.Now().Add(10 * time.Second); heldBytes(t, p) != want; {
		select {
		case <-exited:
			t.Fatalf("qemu-io exited early: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-io never took its locks; held %+v; output: %s", heldBytes(t, p), out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	f := mustOpen(t, Options{Filename: p})
	wantLocked(t, f.SetPerm(permQcow2Parent, sharedQcow2Parent), `Failed to get "write" lock`)
	wantLocked(t, f.CheckPerm(cr, sharedQcow2Parent), `Failed to get shared "write" lock`)
	wantLocked(t, f.SetPerm(resize, all), `Failed to get "resize" lock`)
	wantHeld(t, p, want) // our failed attempts left nothing
	if err := f.SetPerm(cr, all); err != nil {
		t.Fatalf("sharing reader next to qemu-io: %v", err)
	}

	cmd.Process.Kill()
	<-exited
	if err := f.SetPerm(permQcow2Parent, sharedQcow2Parent); err != nil {
		t.Fatalf("after qemu-io exited: %v", err)
	}
}

// Data written by the driver is what QEMU reads, and the reverse.
func TestInteropData(t *testing.T) {
	qemuIO := qemuTool(t, "qemu-io")
	p := newImage(t, t.TempDir(), 1<<20)
	f := mustOpen(t, Options{Filename: p})
	if err := f.WriteAt(bytes.Repeat([]byte{0xab}, 65536), 65536, 0); err != nil {
		t.Fatal(err)
	}
	if out, ok := run(t, qemuIO, "-r", "-f", "raw", "-c", "read -P 0xab 64k 64k", "-c", "read -P 0 0 64k", p); !ok || contains(out, "Pattern verification failed") {
		t.Fatalf("qemu-io read-back: %s", out)
	}
	if out, ok := run(t, qemuIO, "-f", "raw", "-c", "write -P 0xcd 1000 3000", p); !ok {
		t.Fatalf("qemu-io write: %s", out)
	}
	wantData(t, f, 1000, bytes.Repeat([]byte{0xcd}, 3000))
}
