package tools

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"blockd/blockio"
)

// maxRequest is QEMU's BDRV_REQUEST_MAX_BYTES, the largest request
// qemu-io accepts.
const maxRequest = (math.MaxInt32 >> 9) << 9

// ioArgs parses a command's options with getopt (stopping at the first
// operand) and its "off len" operands with cvtnum, printing qemu-io's
// messages on failure.
func (t *ioTool) ioArgs(c *ioCommand, argv []string, short string) (opts []opt, off, count int64, ok bool) {
	opts, operands, err := getopt(argv[1:], optSpec{short: short})
	if err != nil || len(operands) != 2 {
		t.usage(c)
		return nil, 0, 0, false
	}
	if off, ok = t.cvtnum(operands[0]); !ok {
		return nil, 0, 0, false
	}
	if count, ok = t.cvtnum(operands[1]); !ok {
		return nil, 0, 0, false
	}
	if count > maxRequest {
		t.printf("length cannot exceed %d, given %s\n", maxRequest, operands[1])
		return nil, 0, 0, false
	}
	return opts, off, count, true
}

// cvtnum is qemu-io's cvtnum with print_cvtnum_err.
func (t *ioTool) cvtnum(s string) (int64, bool) {
	v, err := parseSizeMax(s, math.MaxInt64)
	switch {
	case errors.Is(err, errSizeRange):
		t.printf("Parsing error: argument too large -- %s\n", s)
		return 0, false
	case err != nil:
		t.printf("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- %s\n", s)
		return 0, false
	}
	return v, true
}

// parsePattern is qemu-io's parse_pattern: a byte in C notation.
func (t *ioTool) parsePattern(s string) (byte, bool) {
	v, err := strconv.ParseInt(s, 0, 64)
	if err != nil || v < 0 || v > 255 || strings.Contains(s, "_") {
		t.printf("%s is not a valid pattern byte\n", s)
		return 0, false
	}
	return byte(v), true
}

// buffer returns a scratch buffer of n bytes for reads, reused between
// commands.
func (t *ioTool) buffer(n int64) []byte {
	if int64(cap(t.buf)) < n {
		t.buf = make([]byte, n)
	}
	return t.buf[:n]
}

// patternBuffer returns n bytes of pattern for a write. The buffer is kept
// between commands with what it holds, so a run of writes with the same
// pattern (a sequential fill) does not rewrite it every time.
func (t *ioTool) patternBuffer(n int64, pattern byte) []byte {
	if int64(cap(t.wbuf)) < n {
		t.wbuf, t.wlen = make([]byte, n), 0
	}
	if t.wlen > 0 && t.wpat != pattern {
		t.wlen = 0
	}
	if t.wlen < n {
		fill(t.wbuf[t.wlen:n], pattern)
		t.wpat, t.wlen = pattern, n
	}
	return t.wbuf[:n]
}

func fill(p []byte, b byte) {
	if len(p) == 0 {
		return
	}
	p[0] = b
	for i := 1; i < len(p); i *= 2 {
		copy(p[i:], p[:i])
	}
}

// read is qemu-io's read_f.
func (t *ioTool) read(argv []string) bool {
	c := findCommand("read")
	opts, off, count, ok := t.ioArgs(c, argv, "bCl:pP:qs:v")
	if !ok {
		return false
	}
	var pflag, lflag, sflag, qflag, vflag, cflag bool
	var pattern byte
	var patOff, patCount int64
	for _, o := range opts {
		switch o.key {
		case 'b':
			t.printf("read -b (vmstate) is not supported by blockd io\n")
			return false
		case 'C':
			cflag = true
		case 'l':
			lflag = true
			if patCount, ok = t.cvtnum(o.arg); !ok {
				return false
			}
		case 'p':
		case 'P':
			pflag = true
			if pattern, ok = t.parsePattern(o.arg); !ok {
				return false
			}
		case 'q':
			qflag = true
		case 's':
			sflag = true
			if patOff, ok = t.cvtnum(o.arg); !ok {
				return false
			}
		case 'v':
			vflag = true
		}
	}
	if !pflag && (lflag || sflag) {
		t.usage(c)
		return false
	}
	if !lflag {
		patCount = count - patOff
	}
	if patCount < 0 || patCount+patOff > count {
		t.printf("pattern verification range exceeds end of read data\n")
		return false
	}
	buf := t.buffer(count)
	start := time.Now()
	err := t.im.dev.ReadAt(buf, off)
	elapsed := time.Since(start)
	if err != nil {
		t.printf("read failed: %s\n", errText(err))
		return false
	}
	ok = true
	if pflag {
		for _, b := range buf[patOff : patOff+patCount] {
			if b != pattern {
				t.printf("Pattern verification failed at offset %d, %d bytes\n", off+patOff, patCount)
				ok = false
				break
			}
		}
	}
	if qflag || t.quiet {
		return ok
	}
	if vflag {
		t.dumpBuffer(buf, off)
	}
	t.report("read", elapsed, off, count, count, 1, cflag)
	return ok
}

// write is qemu-io's write_f: a pattern (0xcd by default) or, with -z,
// write-zeroes (-u lets it unmap). Under the write-through cache mode
// every write is FUA, as when qemu-io's BlockBackend has its write cache
// disabled.
func (t *ioTool) write(argv []string) bool {
	c := findCommand("write")
	opts, off, count, ok := t.ioArgs(c, argv, "bcCfnpP:quz")
	if !ok {
		return false
	}
	var pflag, qflag, zflag, cflag, compress bool
	pattern := byte(0xcd)
	var flags blockio.WriteFlags
	for _, o := range opts {
		switch o.key {
		case 'b':
			t.printf("write -b (vmstate) is not supported by blockd io\n")
			return false
		case 'c':
			compress = true
		case 'C':
			cflag = true
		case 'f':
			flags |= blockio.FUA
		case 'n':
			flags |= blockio.NoFallback
		case 'p':
		case 'P':
			pflag = true
			if pattern, ok = t.parsePattern(o.arg); !ok {
				return false
			}
		case 'q':
			qflag = true
		case 'u':
			flags |= blockio.MayUnmap
		case 'z':
			zflag = true
		}
	}
	if compress && flags&blockio.FUA != 0 {
		t.printf("-f and -b or -c cannot be specified at the same time\n")
		return false
	}
	if flags&blockio.MayUnmap != 0 && !zflag {
		t.printf("-u requires -z to be specified\n")
		return false
	}
	if zflag && pflag {
		t.printf("Only one of -z, -P, and -s can be specified at the same time\n")
		return false
	}
	if compress && !zflag {
		if off%512 != 0 {
			t.printf("%d is not a sector-aligned value for 'offset'\n", off)
			return false
		}
		if count%512 != 0 {
			t.printf("%d is not a sector-aligned value for 'count'\n", count)
			return false
		}
	}
	if t.fua {
		flags |= blockio.FUA
	}
	var err error
	var start time.Time
	if zflag {
		start = time.Now()
		err = t.im.dev.WriteZeroes(off, count, flags)
	} else {
		if flags&blockio.NoFallback != 0 {
			t.printf("write failed: %s\n", errText(fmt.Errorf("%w: -n needs -z", blockio.ErrNotSupported)))
			return false
		}
		buf := t.patternBuffer(count, pattern)
		wf := flags & blockio.FUA
		if compress {
			wf |= blockio.Compressed
		}
		start = time.Now()
		if _, ok := t.im.node.Impl().(blockio.Compressor); compress && !ok {
			err = blockio.ErrNotSupported
		} else {
			err = t.im.dev.WriteAt(buf, off, wf)
		}
	}
	elapsed := time.Since(start)
	if err != nil {
		t.printf("write failed: %s\n", errText(err))
		return false
	}
	if !qflag && !t.quiet {
		t.report("wrote", elapsed, off, count, count, 1, cflag)
	}
	return true
}

// discard is qemu-io's discard_f.
func (t *ioTool) discard(argv []string) bool {
	c := findCommand("discard")
	opts, off, count, ok := t.ioArgs(c, argv, "Cq")
	if !ok {
		return false
	}
	var qflag, cflag bool
	for _, o := range opts {
		switch o.key {
		case 'C':
			cflag = true
		case 'q':
			qflag = true
		}
	}
	start := time.Now()
	err := t.im.dev.Discard(off, count)
	elapsed := time.Since(start)
	if err != nil {
		t.printf("discard failed: %s\n", errText(err))
		return false
	}
	if !qflag && !t.quiet {
		t.report("discard", elapsed, off, count, count, 1, cflag)
	}
	return true
}

func (t *ioTool) flush([]string) bool {
	if err := t.im.dev.Flush(); err != nil {
		t.printf("flush failed: %s\n", errText(err))
		return false
	}
	return true
}

func (t *ioTool) length([]string) bool {
	n, err := t.im.dev.Size()
	if err != nil {
		t.printf("getlength: %s\n", errText(err))
		return false
	}
	t.printf("%s\n", cvtstr(float64(n)))
	return true
}

// report is qemu-io's print_report.
func (t *ioTool) report(op string, d time.Duration, off, count, total int64, cnt int, machine bool) {
	secs := d.Seconds()
	if !machine {
		t.printf("%s %d/%d bytes at offset %d\n", op, total, count, off)
		t.printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n",
			cvtstr(float64(total)), cnt, timestr(d, false), cvtstr(float64(total)/secs), float64(cnt)/secs)
		return
	}
	t.printf("%d,%d,%s,%.3f,%.3f\n", total, cnt, timestr(d, true), float64(total)/secs, float64(cnt)/secs)
}

// cvtstr is qemu-io's cvtstr: three decimals and a binary unit, the
// decimals dropped when they are zero.
func cvtstr(v float64) string {
	units := []struct {
		shift  uint
		suffix string
	}{{60, " EiB"}, {50, " PiB"}, {40, " TiB"}, {30, " GiB"}, {20, " MiB"}, {10, " KiB"}}
	suffix := " bytes"
	for _, u := range units {
		if v >= float64(uint64(1)<<u.shift) {
			v /= float64(uint64(1) << u.shift)
			suffix = u.suffix
			break
		}
	}
	s := fmt.Sprintf("%.3f", v)
	if i := strings.Index(s, ".000"); i >= 0 {
		return s[:i] + suffix
	}
	return s + suffix
}

// timestr is qemu-io's timestr: "SS.ss sec" below a second, else
// "H:MM:SS.ss" (always that with verbose, qemu-io's -C).
func timestr(d time.Duration, verbose bool) string {
	sec := int64(d / time.Second)
	frac := float64(d%time.Second) / 1e9
	if verbose || sec > 0 {
		return fmt.Sprintf("%d:%02d:%05.2f", sec/3600, sec/60%60, float64(sec%60)+frac)
	}
	return fmt.Sprintf("%05.2f sec", frac)
}

// dumpBuffer is qemu-io's dump_buffer (read -v).
func (t *ioTool) dumpBuffer(p []byte, off int64) {
	for i := 0; i < len(p); i += 16 {
		line := p[i:min(i+16, len(p))]
		t.printf("%08x:  ", off+int64(i))
		for _, b := range line {
			t.printf("%02x ", b)
		}
		t.printf(" ")
		for _, b := range line {
			if b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' {
				t.printf("%c", b)
			} else {
				t.printf(".")
			}
		}
		t.printf("\n")
	}
}
