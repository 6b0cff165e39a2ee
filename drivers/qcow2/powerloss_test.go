package qcow2

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"blockd/blockio"
)

// Power loss: unlike a killed process, a power failure loses the writes
// the disk had not made stable. The workload of crash_test.go runs on an
// in-memory disk with a volatile cache, then a random possible state after
// a power failure (writes since the last flush lost, torn or reordered) is
// checked the same way.

// plDev simulates a disk with a volatile write cache: writes since the
// last flush may be lost, torn (at 4 KiB granularity) or reordered when
// the power fails.
type plDev struct {
	memDev
	durable []byte
	pending []memWrite
}

func (d *plDev) WriteAt(p []byte, off int64, flags blockio.WriteFlags) error {
	if err := d.memDev.WriteAt(p, off, 0); err != nil {
		return err
	}
	d.mu.Lock()
	d.pending = append(d.pending, memWrite{off, append([]byte(nil), p...)})
	d.mu.Unlock()
	if flags&blockio.FUA != 0 {
		return d.Flush()
	}
	return nil
}

func (d *plDev) Flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.pending {
		d.durable = applyWrite(d.durable, w.off, w.data)
	}
	d.pending = d.pending[:0]
	return nil
}

func (d *plDev) Truncate(size int64) error {
	if err := d.Flush(); err != nil {
		return err
	}
	if err := d.memDev.Truncate(size); err != nil {
		return err
	}
	d.mu.Lock()
	d.durable = append([]byte(nil), d.b...)
	d.mu.Unlock()
	return nil
}

func (d *plDev) Discard(off, length int64) error {
	return d.WriteAt(make([]byte, length), off, 0)
}

func applyWrite(b []byte, off int64, p []byte) []byte {
	if end := off + int64(len(p)); end > int64(len(b)) {
		b = append(b, make([]byte, end-int64(len(b)))...)
	}
	copy(b[off:], p)
	return b
}

// powerLoss returns a possible on-disk state after a power failure.
func (d *plDev) powerLoss(rng *rand.Rand) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	img := append([]byte(nil), d.durable...)
	order := rng.Perm(len(d.pending))
	for _, i := range order {
		w := d.pending[i]
		switch rng.Intn(3) {
		case 0: // lost
		case 1:
			img = applyWrite(img, w.off, w.data)
		default: // torn
			for p := 0; p < len(w.data); p += 4096 {
				if rng.Intn(2) == 0 {
					img = applyWrite(img, w.off+int64(p), w.data[p:min(p+4096, len(w.data))])
				}
			}
		}
	}
	return img
}

func TestPowerLoss(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	budget := crashBudget() / 2
	deadline := time.Now().Add(budget)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for round := 0; round == 0 || time.Now().Before(deadline); round++ {
		cc := crashConfigs[round%len(crashConfigs)]
		seed := rng.Int63()
		powerLossRound(t, dir, round, cc, seed)
	}
}

// TestPowerLossCompressed is TestPowerLoss with a workload of mostly
// compressed writes, so that their ordering is not covered by the
// dependencies normal writes create.
func TestPowerLossCompressed(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	deadline := time.Now().Add(crashBudget() / 2)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	configs := []crashConfig{
		{co: CreateOptions{ClusterSize: 4096}, discard: true, compress: true},
		{co: CreateOptions{CompressionType: "zstd", ClusterSize: 8192}, discard: true, compress: true},
		{co: CreateOptions{ClusterSize: 4096}, backing: true, compress: true},
	}
	for round := 0; round == 0 || time.Now().Before(deadline); round++ {
		powerLossRound(t, dir, round, configs[round%len(configs)], rng.Int63())
	}
}

// genCompressOp: compressed cluster writes, with some partial writes
// (copy-on-write from compressed data) and discards (freed streams).
func genCompressOp(rng *rand.Rand, seq, size, cs int64, discard bool) crashOp {
	off := rng.Int63n(size/cs) * cs
	switch k := rng.Intn(10); {
	case k < 7:
		return crashOp{'C', seq, off, min(size-off, cs)}
	case k < 9 || !discard:
		s := rng.Int63n(cs/512) * 512
		return crashOp{'W', seq, off + s, min(size-off-s, 512*(1+rng.Int63n(4)))}
	default:
		return crashOp{'D', seq, off, cs}
	}
}

func powerLossRound(t *testing.T, dir string, round int, cc crashConfig, seed int64) {
	rng := rand.New(rand.NewSource(seed))
	co := cc.co
	co.Size = 4 << 20
	cs := co.ClusterSize
	if cs == 0 {
		cs = 65536
	}
	var base []byte
	var bdev *memDev
	if cc.backing {
		base = make([]byte, co.Size/2)
		rng.Read(base)
		bdev = &memDev{b: base, ro: true}
	}
	dev := &plDev{}
	if err := Create(dev, co); err != nil {
		t.Fatal(err)
	}
	if err := dev.Flush(); err != nil {
		t.Fatal(err)
	}
	// A tiny L2 cache forces write-backs between flushes.
	es := min(cs, 512)
	img, err := Open(dev, OpenOptions{L2CacheSize: 2 * es, L2CacheEntrySize: es, RefcountCacheSize: 4 * cs})
	if err != nil {
		t.Fatal(err)
	}
	if bdev != nil {
		img.SetBacking(bdev)
	}
	var ops []crashOp
	committed := int64(0)
	n := 5 + rng.Int63n(120)
	for seq := int64(1); seq <= n; seq++ {
		gen := genOp
		if cc.compress {
			gen = genCompressOp
		}
		op := gen(rng, seq, co.Size, cs, cc.discard)
		ops = append(ops, op)
		if err := applyCrashOp(img, op); err != nil {
			t.Fatal(err)
		}
		if rng.Intn(6) == 0 {
			if err := img.Flush(); err != nil {
				t.Fatal(err)
			}
			committed = seq
		}
	}
	crashed := dev.powerLoss(rng)
	path := filepath.Join(dir, fmt.Sprintf("pl%d.qcow2", round))
	if err := os.WriteFile(path, crashed, 0o644); err != nil {
		t.Fatal(err)
	}
	if co.LazyRefcounts {
		img, fd := openImage(t, path, OpenOptions{})
		img.Close()
		fd.Close()
	}
	if c := qemuImgCheck(t, path); c.Corruptions != 0 || c.CheckErrors != 0 {
		t.Fatalf("round %d seed %d config %+v: qemu-img check: %s", round, seed, cc, c.Out)
	}
	img2, fd := openImage(t, path, OpenOptions{ReadOnly: true})
	defer fd.Close()
	defer img2.Close()
	if bdev != nil {
		img2.SetBacking(bdev)
	}
	verifyCrash(t, img2, ops, committed, func(pos int64) uint64 {
		if pos+8 <= int64(len(base)) {
			return binary.LittleEndian.Uint64(base[pos:])
		}
		return 0
	})
}
