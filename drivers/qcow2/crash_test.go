package qcow2

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"blockd/blockio"
	"blockd/internal/racechild"
)

// Crash consistency. The workload: writes, compressed whole-cluster
// writes, write-zeroes and cluster aligned discards (512-byte granularity), with a flush every few
// operations. Every operation is announced before it is issued and every
// flush after it returned, so after a crash:
//   - qemu-img check must find no corruption (leaks are allowed);
//   - every sector whose last operation was covered by a completed flush
//     must hold that operation's data, and sectors never touched must
//     still hold the initial content.

const crashEnv = "QCOW2_CRASH_HELPER"

// runCrashHelper runs this test binary as the crash helper for spec,
// SIGKILLs it after runFor and returns the lines it announced on stdout
// before it died.
func runCrashHelper(t *testing.T, spec string, runFor time.Duration) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+spec)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan []string, 1)
	go func() {
		var ls []string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			ls = append(ls, sc.Text())
		}
		lines <- ls
	}()
	time.Sleep(runFor)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	ls := <-lines
	_ = cmd.Wait()
	return ls
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(crashEnv); strings.HasPrefix(spec, "resize ") {
		os.Exit(resizeCrashHelper(spec[7:]))
	} else if strings.HasPrefix(spec, "snapshot ") {
		os.Exit(snapshotCrashHelper(spec[9:]))
	} else if spec != "" {
		os.Exit(crashHelper(spec))
	}
	racechild.NoExitSleep()
	os.Exit(m.Run())
}

type crashOp struct {
	kind     byte // 'W' write, 'C' compressed write, 'Z' zero, 'D' discard
	seq      int64
	off, len int64
}

// sectorValue is the content a write with sequence seq gives the 8-byte
// word at guest offset pos.
func sectorValue(seq, pos int64) uint64 { return uint64(seq)<<40 | uint64(pos>>3) }

func fillPattern(buf []byte, seq, off int64) {
	for i := 0; i < len(buf); i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], sectorValue(seq, off+int64(i)))
	}
}

// genOps produces the workload: op i has sequence i+1.
func genOp(rng *rand.Rand, seq, size, cs int64, discard bool) crashOp {
	sectors := size / 512
	off := rng.Int63n(sectors) * 512
	n := min(size-off, (1+rng.Int63n(3*cs/512+8))*512)
	switch k := rng.Intn(10); {
	case k < 6:
		return crashOp{'W', seq, off, n}
	case k < 7:
		off = off &^ (cs - 1)
		return crashOp{'C', seq, off, min(size-off, cs)}
	case k < 9 || !discard:
		return crashOp{'Z', seq, off, n}
	default:
		off = off &^ (cs - 1)
		return crashOp{'D', seq, off, min(size-off, cs*(1+rng.Int63n(3)))}
	}
}

func applyCrashOp(img *Image, op crashOp) error {
	switch op.kind {
	case 'W':
		buf := make([]byte, op.len)
		fillPattern(buf, op.seq, op.off)
		return img.WriteAt(buf, op.off, 0)
	case 'C':
		// Compression only goes to clusters without a host cluster;
		// elsewhere the same data is written normally.
		buf := make([]byte, op.len)
		fillPattern(buf, op.seq, op.off)
		err := img.WriteAt(buf, op.off, blockio.Compressed)
		if errors.Is(err, errCompressAllocated) {
			err = img.WriteAt(buf, op.off, 0)
		}
		return err
	case 'Z':
		return img.WriteZeroes(op.off, op.len, blockio.MayUnmap)
	default:
		return img.Discard(op.off, op.len)
	}
}

// crashHelper runs in the child: "path seed cs discard backing".
func crashHelper(spec string) int {
	f := strings.Fields(spec)
	path := f[0]
	seed, _ := strconv.ParseInt(f[1], 10, 64)
	cs, _ := strconv.ParseInt(f[2], 10, 64)
	discard := f[3] == "1"
	fd, err := openFileDev(path, false)
	if err != nil {
		fmt.Println("E", err)
		return 1
	}
	img, err := Open(fd, OpenOptions{L2CacheSize: 4 * cs, RefcountCacheSize: 4 * cs})
	if err != nil {
		fmt.Println("E", err)
		return 1
	}
	if len(f) > 4 {
		b, err := openFileDev(f[4], true)
		if err != nil {
			fmt.Println("E", err)
			return 1
		}
		img.SetBacking(b)
	}
	size, _ := img.Size()
	rng := rand.New(rand.NewSource(seed))
	// Unbuffered: one write(2) per line, so an announced operation is
	// visible to the parent before it is issued.
	out := os.Stdout
	for seq := int64(1); ; seq++ {
		op := genOp(rng, seq, size, cs, discard)
		fmt.Fprintf(out, "%c %d %d %d\n", op.kind, op.seq, op.off, op.len)
		if err := applyCrashOp(img, op); err != nil {
			fmt.Fprintln(out, "E", err)
			return 1
		}
		if seq%5 == 0 {
			if err := img.Flush(); err != nil {
				fmt.Fprintln(out, "E", err)
				return 1
			}
			fmt.Fprintf(out, "F %d\n", seq)
		}
	}
}

// verifyCrash checks the image content against the announced operations:
// a sector last touched by a committed operation must hold its data; a
// sector touched later by uncommitted operations may hold the committed
// value or the value of any of those operations, and nothing else (no
// stale data from another place or time).
func verifyCrash(t *testing.T, img *Image, ops []crashOp, committed int64, initial func(off int64) uint64) {
	t.Helper()
	size, _ := img.Size()
	nsec := size / 512
	lastCommitted := make([]int32, nsec) // op index + 1
	later := make(map[int64][]int32)     // uncommitted touchers per sector
	for i, op := range ops {
		for s := op.off / 512; s < (op.off+op.len)/512; s++ {
			if op.seq <= committed {
				lastCommitted[s] = int32(i + 1)
			} else {
				later[s] = append(later[s], int32(i+1))
			}
		}
	}
	value := func(li int32, pos int64) uint64 {
		if li == 0 {
			return initial(pos)
		}
		if op := ops[li-1]; op.kind == 'W' || op.kind == 'C' {
			return sectorValue(op.seq, pos)
		}
		return 0
	}
	data := readAll(t, img)
	for s := int64(0); s < nsec; s++ {
		for p := s * 512; p < s*512+512; p += 8 {
			got := binary.LittleEndian.Uint64(data[p:])
			if got == value(lastCommitted[s], p) {
				continue
			}
			ok := false
			for _, li := range later[s] {
				if got == value(li, p) {
					ok = true
					break
				}
			}
			if !ok {
				t.Fatalf("sector %d (offset %#x): got %#x, want %#x (committed op %d, later ops %v, committed seq %d)",
					s, p, got, value(lastCommitted[s], p), lastCommitted[s], later[s], committed)
			}
		}
	}
}

type crashConfig struct {
	co      CreateOptions
	backing bool
	discard bool
	// compress: the power loss workload is mostly compressed writes.
	compress bool
}

var crashConfigs = []crashConfig{
	{co: CreateOptions{}, discard: true},
	{co: CreateOptions{ClusterSize: 4096}, backing: true, discard: true},
	{co: CreateOptions{ClusterSize: 512, RefcountBits: 64}, discard: true},
	{co: CreateOptions{LazyRefcounts: true, ClusterSize: 8192}, discard: true},
	{co: CreateOptions{LazyRefcounts: true, ClusterSize: 16384}, backing: true, discard: true},
	{co: CreateOptions{ExtendedL2: true, ClusterSize: 32768}, backing: true, discard: true},
	{co: CreateOptions{Compat: "0.10", ClusterSize: 16384}, backing: true},
	{co: CreateOptions{CompressionType: "zstd", ClusterSize: 4096}, discard: true},
}

func crashBudget() time.Duration {
	if s := os.Getenv("QCOW2_CRASH_SECONDS"); s != "" {
		n, _ := strconv.Atoi(s)
		return time.Duration(n) * time.Second
	}
	if testing.Short() {
		return 3 * time.Second
	}
	return 6 * time.Second
}

func TestCrashKill(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	deadline := time.Now().Add(crashBudget())
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for round := 0; round == 0 || time.Now().Before(deadline); round++ {
		cc := crashConfigs[round%len(crashConfigs)]
		seed := rng.Int63()
		t.Logf("round %d config %+v seed %d", round, cc, seed)
		crashRound(t, dir, round, cc, seed, time.Duration(30+rng.Intn(400))*time.Millisecond)
	}
}

func crashRound(t *testing.T, dir string, round int, cc crashConfig, seed int64, runFor time.Duration) {
	path := filepath.Join(dir, fmt.Sprintf("crash%d.qcow2", round))
	co := cc.co
	co.Size = 8 << 20
	cs := co.ClusterSize
	if cs == 0 {
		cs = 65536
	}
	var base []byte
	spec := fmt.Sprintf("%s %d %d %v", path, seed, cs, map[bool]int{true: 1}[cc.discard])
	if cc.backing {
		bpath := filepath.Join(dir, fmt.Sprintf("base%d.raw", round))
		base = make([]byte, co.Size/2)
		rand.New(rand.NewSource(seed)).Read(base)
		if err := os.WriteFile(bpath, base, 0o644); err != nil {
			t.Fatal(err)
		}
		co.BackingFile, co.BackingFormat = bpath, "raw"
		spec += " " + bpath
	}
	newImageFile(t, path, co)

	ls := runCrashHelper(t, spec, runFor)

	var ops []crashOp
	committed := int64(0)
	for _, l := range ls {
		f := strings.Fields(l)
		if len(f) == 0 || (f[0] != "F" && f[0] != "E" && len(f) != 4) {
			t.Fatalf("helper output: %q", l)
		}
		switch f[0] {
		case "E":
			t.Fatalf("helper failed: %s", l)
		case "F":
			committed, _ = strconv.ParseInt(f[1], 10, 64)
		default:
			var op crashOp
			op.kind = f[0][0]
			op.seq, _ = strconv.ParseInt(f[1], 10, 64)
			op.off, _ = strconv.ParseInt(f[2], 10, 64)
			op.len, _ = strconv.ParseInt(f[3], 10, 64)
			ops = append(ops, op)
		}
	}
	if cc.co.LazyRefcounts {
		// The dirty bit is set: opening read-write repairs the refcounts.
		img, fd := openImage(t, path, OpenOptions{})
		img.Close()
		fd.Close()
	}
	if c := qemuImgCheck(t, path); c.Corruptions != 0 || c.CheckErrors != 0 {
		t.Fatalf("round %d (%d ops, committed %d): qemu-img check: %s", round, len(ops), committed, c.Out)
	}
	img, done := openChain(t, path)
	defer done()
	verifyCrash(t, img, ops, committed, func(pos int64) uint64 {
		if pos+8 <= int64(len(base)) {
			return binary.LittleEndian.Uint64(base[pos:])
		}
		return 0
	})
}
