package tools

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// randomCommands writes an endless stream of blockd io commands on an
// image of size bytes: writes (aligned and not), zero writes, discards and
// flushes, until the reader goes away.
func randomCommands(w *bufio.Writer, rng *rand.Rand, size int64) error {
	for {
		n := int64(512 << rng.IntN(10)) // 512 B .. 256 KiB
		off := rng.Int64N(size-n) &^ 511
		if rng.IntN(4) == 0 {
			off, n = off+rng.Int64N(511), n-rng.Int64N(511)
		}
		var c string
		switch rng.IntN(10) {
		case 0, 1:
			c = fmt.Sprintf("write -z %d %d", off, n)
		case 2:
			c = fmt.Sprintf("discard %d %d", off, n)
		case 3:
			c = "flush"
		default:
			c = fmt.Sprintf("write -P %d %d %d", rng.IntN(256), off, n)
		}
		if _, err := w.WriteString(c + "\n"); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

// A `blockd io` writer killed with SIGKILL at random moments leaves an
// image that qemu-img check (and blockd img check) finds free of
// corruption; leaked clusters are allowed. The rounds vary the cluster
// size, the cache mode and whether the image has a backing file.
func TestCrashKilledWriter(t *testing.T) {
	requireQemu(t)
	bin := blockdBinary(t)
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	const size = 32 << 20
	base := filepath.Join(dir, "base.qcow2")
	mustImg(t, "create", "-q", "-f", "qcow2", base, fmt.Sprint(size))
	mustIO(t, base, "write -P 0x5a 0 32M")

	deadline := time.Now().Add(8 * time.Second)
	rounds, leaky := 0, 0
	for ; rounds < 60 && time.Now().Before(deadline); rounds++ {
		p := filepath.Join(dir, fmt.Sprintf("r%d.qcow2", rounds))
		args := []string{"create", "-q", "-f", "qcow2", "-o", []string{"cluster_size=4k", "cluster_size=64k", "cluster_size=512k"}[rng.IntN(3)]}
		if rng.IntN(3) == 0 {
			args = append(args, "-b", base, "-F", "qcow2")
		}
		mustImg(t, append(args, p, fmt.Sprint(size))...)
		cache := []string{"writeback", "writethrough", "unsafe"}[rng.IntN(3)]
		cmd := exec.Command(bin, "io", "-q", "-t", cache, "-f", "qcow2", p)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		feed := rand.New(rand.NewPCG(rng.Uint64(), 1))
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = randomCommands(bufio.NewWriter(stdin), feed, size)
		}()
		time.Sleep(time.Duration(5+rng.IntN(150)) * time.Millisecond)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		stdin.Close()
		<-done
		if strings.Contains(stderr.String(), "panic") {
			t.Fatalf("round %d: blockd io panicked:\n%s", rounds, stderr.String())
		}

		r := qemuRun(dir, "qemu-img", "check", "--output=json", p)
		var res struct {
			Corruptions int `json:"corruptions"`
			Leaks       int `json:"leaks"`
			CheckErrors int `json:"check-errors"`
		}
		if err := json.Unmarshal([]byte(r.out), &res); err != nil || (r.code != 0 && r.code != 3) ||
			res.Corruptions != 0 || res.CheckErrors != 0 {
			keep := filepath.Join(os.TempDir(), fmt.Sprintf("blockd-crash-%d.qcow2", seed))
			_ = exec.Command("cp", p, keep).Run()
			t.Fatalf("round %d (cache=%s %v): qemu-img check: %s\nimage kept as %s", rounds, cache, args, r, keep)
		}
		if res.Leaks > 0 {
			leaky++
		}
		if b := img(t, "check", p); b.code != r.code {
			t.Errorf("round %d: blockd img check exit %d, qemu-img check %d: %s", rounds, b.code, r.code, b)
		}
		// The image is still usable: it opens read-write and takes I/O.
		mustIO(t, p, "write -q -P 1 0 64k", "read -q -P 1 0 64k")
		_ = os.Remove(p)
	}
	t.Logf("%d rounds, %d left leaked clusters", rounds, leaky)
	if rounds < 5 {
		t.Fatalf("only %d rounds ran", rounds)
	}
}
