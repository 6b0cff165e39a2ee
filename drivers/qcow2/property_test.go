package qcow2

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"blockd/blockio"
)

// Randomized operations checked against an in-memory model of the disk;
// the final image must be clean for qemu-img check and equal, for
// qemu-img compare, to a raw file holding the model.

type propConfig struct {
	name    string
	create  CreateOptions
	backing bool // raw backing file, shorter than the image
	cache   OpenOptions
}

var propConfigs = []propConfig{
	{name: "default", create: CreateOptions{}},
	{name: "backing", create: CreateOptions{}, backing: true},
	{name: "c512_backing", create: CreateOptions{ClusterSize: 512}, backing: true},
	{name: "c4k_rb1", create: CreateOptions{ClusterSize: 4096, RefcountBits: 1}},
	{name: "c4k_rb64_smallcache", create: CreateOptions{ClusterSize: 4096, RefcountBits: 64},
		cache: OpenOptions{L2CacheSize: 8192, RefcountCacheSize: 4 * 4096}},
	{name: "v2_backing", create: CreateOptions{Compat: "0.10"}, backing: true},
	{name: "v2", create: CreateOptions{Compat: "0.10", ClusterSize: 8192}},
	{name: "extl2_backing", create: CreateOptions{ExtendedL2: true, ClusterSize: 16384}, backing: true},
	{name: "extl2", create: CreateOptions{ExtendedL2: true}},
	{name: "lazy_backing", create: CreateOptions{LazyRefcounts: true, ClusterSize: 4096}, backing: true},
	{name: "c2M", create: CreateOptions{ClusterSize: 2 << 20}, backing: true},
}

func propIterations() int {
	if s := os.Getenv("QCOW2_PROP_ITERS"); s != "" {
		n, _ := strconv.Atoi(s)
		return n
	}
	if testing.Short() {
		return 60
	}
	return 250
}

func TestRandomOpsAgainstModel(t *testing.T) {
	requireQemu(t)
	for i, pc := range propConfigs {
		pc := pc
		seed := int64(1000 + i)
		t.Run(pc.name, func(t *testing.T) {
			t.Parallel()
			iters := propIterations()
			if pc.create.ClusterSize >= 1<<20 {
				iters /= 4 // every partial write copies 2 MiB
			}
			runModel(t, pc, seed, iters)
		})
	}
}

type modelRun struct {
	t       *testing.T
	pc      propConfig
	path    string
	img     *Image
	fd      *fileDev
	backing *fileDev
	model   []byte
	bdata   []byte
	size    int64
	cs      int64
}

func (m *modelRun) open() {
	o := m.pc.cache
	m.img, m.fd = openImage(m.t, m.path, o)
	if m.backing != nil {
		m.img.SetBacking(m.backing)
	}
}

func (m *modelRun) close() {
	if err := m.img.Close(); err != nil {
		m.t.Fatalf("Close: %v", err)
	}
	m.fd.Close()
}

func runModel(t *testing.T, pc propConfig, seed int64, iters int) {
	dir := t.TempDir()
	rng := rand.New(rand.NewSource(seed))
	m := &modelRun{t: t, pc: pc, path: filepath.Join(dir, "img.qcow2")}
	m.cs = pc.create.ClusterSize
	if m.cs == 0 {
		m.cs = 65536
	}
	m.size = 8<<20 + 4096
	if m.cs == 2<<20 {
		m.size = 12<<20 + 512
	}
	co := pc.create
	co.Size = m.size
	m.model = make([]byte, m.size)
	if pc.backing {
		bpath := filepath.Join(dir, "base.raw")
		m.bdata = make([]byte, m.size*3/4&^511)
		rng.Read(m.bdata)
		if err := os.WriteFile(bpath, m.bdata, 0o644); err != nil {
			t.Fatal(err)
		}
		copy(m.model, m.bdata)
		co.BackingFile, co.BackingFormat = bpath, "raw"
		var err error
		if m.backing, err = openFileDev(bpath, true); err != nil {
			t.Fatal(err)
		}
		defer m.backing.Close()
	}
	newImageFile(t, m.path, co)
	m.open()
	v3 := pc.create.Compat != "0.10"
	for i := 0; i < iters; i++ {
		off := rng.Int63n(m.size)
		maxLen := m.size - off
		n := min(maxLen, 1+rng.Int63n(3*m.cs+m.cs/2))
		if rng.Intn(4) == 0 { // cluster-aligned ops are common in practice
			off = off &^ (m.cs - 1)
			n = min(m.size-off, (1+rng.Int63n(3))*m.cs)
		}
		switch op := rng.Intn(20); {
		case op < 9:
			buf := make([]byte, n)
			rng.Read(buf)
			if err := m.img.WriteAt(buf, off, 0); err != nil {
				t.Fatalf("op %d write %d+%d: %v", i, off, n, err)
			}
			copy(m.model[off:], buf)
		case op < 12:
			var fl blockio.WriteFlags
			if rng.Intn(2) == 0 {
				fl = blockio.MayUnmap
			}
			if err := m.img.WriteZeroes(off, n, fl); err != nil {
				t.Fatalf("op %d zero %d+%d: %v", i, off, n, err)
			}
			clear(m.model[off : off+n])
		case op < 14:
			if err := m.img.Discard(off, n); err != nil {
				t.Fatalf("op %d discard %d+%d: %v", i, off, n, err)
			}
			start, end := roundUp(off, m.cs), (off+n)&^(m.cs-1)
			if off+n == m.size {
				end = off + n
			}
			for c := start; c < end; c++ {
				switch {
				case v3 || m.backing == nil:
					m.model[c] = 0
				}
			}
		case op < 15:
			if err := m.img.Flush(); err != nil {
				t.Fatal(err)
			}
		case op < 16:
			m.close()
			m.open()
		default:
			buf := make([]byte, n)
			if err := m.img.ReadAt(buf, off); err != nil {
				t.Fatalf("op %d read %d+%d: %v", i, off, n, err)
			}
			if !bytes.Equal(buf, m.model[off:off+n]) {
				t.Fatalf("op %d read %d+%d: %s", i, off, n, firstDiff(buf, m.model[off:off+n]))
			}
			st, err := m.img.BlockStatus(off, n)
			if err != nil {
				t.Fatal(err)
			}
			if st.Flags&blockio.StatusZero != 0 && !bytes.Equal(m.model[off:off+st.Length], make([]byte, st.Length)) {
				t.Fatalf("op %d: BlockStatus zero at %d+%d but model is not", i, off, st.Length)
			}
		}
	}
	if got := readAll(t, m.img); !bytes.Equal(got, m.model) {
		t.Fatalf("final content: %s", firstDiff(got, m.model))
	}
	res, err := m.img.Check(false)
	if err != nil || res.Corruptions+res.Leaks+res.CheckErrors != 0 {
		t.Fatalf("Check: %+v %v", res, err)
	}
	m.close()
	assertClean(t, m.path)
	raw := filepath.Join(dir, "model.raw")
	if err := os.WriteFile(raw, m.model, 0o644); err != nil {
		t.Fatal(err)
	}
	qemuCompare(t, m.path, "qcow2", raw, "raw")
}

// TestConcurrentWriters has goroutines write interleaved 512-byte stripes
// of the same clusters (each byte owned by one writer), so allocations and
// copy-on-write of one cluster race; nothing may be lost.
func TestConcurrentWriters(t *testing.T) {
	for _, co := range []CreateOptions{{ClusterSize: 65536}, {ClusterSize: 4096}, {ExtendedL2: true}} {
		t.Run(fmt.Sprint(co.ClusterSize, co.ExtendedL2), func(t *testing.T) {
			dev := &memDev{}
			co.Size = 16 << 20
			if err := Create(dev, co); err != nil {
				t.Fatal(err)
			}
			img, err := Open(dev, OpenOptions{L2CacheSize: 16384})
			if err != nil {
				t.Fatal(err)
			}
			const writers = 8
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			written := make([]map[int64]bool, writers)
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					rng := rand.New(rand.NewSource(int64(w)))
					written[w] = map[int64]bool{}
					buf := make([]byte, 512)
					for i := range buf {
						buf[i] = byte(w + 1)
					}
					for i := 0; i < 400; i++ {
						// stripe index ≡ w (mod writers)
						s := rng.Int63n(co.Size/512/writers)*writers + int64(w)
						written[w][s] = true
						if err := img.WriteAt(buf, s*512, 0); err != nil {
							errs <- err
							return
						}
						if i%97 == 0 {
							if err := img.Flush(); err != nil {
								errs <- err
								return
							}
						}
					}
				}(w)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			got := readAll(t, img)
			for s := int64(0); s < co.Size/512; s++ {
				w := byte(s%writers) + 1
				want := byte(0)
				if written[w-1][s] {
					want = w
				}
				for _, b := range got[s*512 : s*512+512] {
					if b != want {
						t.Fatalf("stripe %d holds %d, want %d", s, b, want)
					}
				}
			}
			// Rewrite the same data through a fresh open: all stripes that
			// were written must survive a reopen too.
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			img2, err := Open(dev, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got2 := readAll(t, img2); !bytes.Equal(got, got2) {
				t.Fatalf("after reopen: %s", firstDiff(got, got2))
			}
			res, err := img2.Check(false)
			if err != nil || res.Corruptions+res.Leaks != 0 {
				t.Fatalf("Check: %+v %v", res, err)
			}
			img2.Close()
		})
	}
}

// TestConcurrentMixed runs every kind of request concurrently (overlapping
// ranges included) to exercise the locking under the race detector; the
// image must stay consistent.
func TestConcurrentMixed(t *testing.T) {
	for _, co := range []CreateOptions{{ClusterSize: 4096}, {ExtendedL2: true}, {LazyRefcounts: true}} {
		dev := &memDev{}
		co.Size = 16 << 20
		if err := Create(dev, co); err != nil {
			t.Fatal(err)
		}
		img, err := Open(dev, OpenOptions{L2CacheSize: 8192, L2CacheEntrySize: 4096})
		if err != nil {
			t.Fatal(err)
		}
		base := &memDev{b: pattern(8<<20, 9), ro: true}
		img.SetBacking(base)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for w := 0; w < 5; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				rng := rand.New(rand.NewSource(int64(w)))
				buf := make([]byte, 200000)
				for i := 0; i < 150; i++ {
					off := rng.Int63n(co.Size - int64(len(buf)))
					n := rng.Int63n(int64(len(buf))) + 1
					var err error
					switch rng.Intn(8) {
					case 0, 1, 2:
						err = img.WriteAt(buf[:n], off, 0)
					case 3:
						err = img.ReadAt(buf[:n], off)
					case 4:
						err = img.WriteZeroes(off, n, blockio.MayUnmap)
					case 5:
						err = img.Discard(off, n)
					case 6:
						_, err = img.BlockStatus(off, n)
					default:
						if w == 0 {
							err = img.SetBackingFile(fmt.Sprint("base", i), "raw")
						} else {
							err = img.Flush()
						}
						_ = img.Info()
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}(w)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		res, err := img.Check(false)
		if err != nil || res.Corruptions+res.Leaks+res.CheckErrors != 0 {
			t.Fatalf("%+v: Check: %+v %v", co, res, err)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
