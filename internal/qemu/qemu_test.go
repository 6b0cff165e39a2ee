package qemu

import (
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// sizes is the table of the reference's answers; TestStrtoszAgainstQemuImg
// checks every row against qemu-img 7.2 itself.
var sizes = []struct {
	in   string
	want uint64
	err  error
}{
	{"0", 0, nil},
	{"07", 7, nil},
	{"008", 8, nil},
	{"12k", 12288, nil},
	{" 12K", 12288, nil},
	{"+12K", 12288, nil},
	{"1.5K", 1536, nil},
	{"1.5t", 1649267441664, nil},
	{"0.5K", 512, nil},
	{"1.0005K", 1025, nil}, // 1024.512 rounds half up
	{"1.25M", 1310720, nil},
	{"1.5E", 1729382256910270464, nil},
	{"1.5e", 1729382256910270464, nil}, // a lone e is the suffix, not an exponent
	{"1.K", 1024, nil},
	{"1.", 1, nil},
	{"1.0B", 1, nil},
	{"1.9999999999999999999999E", 1 << 60, nil}, // the fraction rounds to 1.0 and counts as 0
	{"0x10", 16, nil},
	{"0x10K", 16384, nil}, // deprecated, accepted with a warning
	{"0X10M", 16 << 20, nil},
	{"0x10B", 0x10b, nil},
	{"0x10E", 0x10e, nil},
	{"8E", 1 << 63, nil},
	{"15E", 15 << 60, nil},
	{"18446744073709551615", math.MaxUint64, nil},
	{"0xffffffffffffffff", math.MaxUint64, nil},
	{"16E", 0, ErrSizeRange},
	{"18446744073709551616", 0, ErrSizeRange},
	{"0x10000000000000000", 0, ErrSizeRange},
	{"99999999999999999999K", 0, ErrInvalidSize}, // overflow before a suffix: invalid
	{"0x10000000000000000K", 0, ErrInvalidSize},
	{"", 0, ErrInvalidSize},
	{"K", 0, ErrInvalidSize},
	{"0x", 0, ErrInvalidSize},
	{"00x10", 0, ErrInvalidSize},
	{"0x1.8K", 0, ErrInvalidSize},
	{"1.5", 0, ErrInvalidSize},
	{"1.5B", 0, ErrInvalidSize},
	{"1e3", 0, ErrInvalidSize},
	{"1.5e3", 0, ErrInvalidSize},
	{"1.5E+3", 0, ErrInvalidSize},
	{"1.e3K", 0, ErrInvalidSize},
	{".5K", 0, ErrInvalidSize},
	{"12KB", 0, ErrInvalidSize},
	{"1.5Ek", 0, ErrInvalidSize},
	{"12K ", 0, ErrInvalidSize},
	{"1x", 0, ErrInvalidSize},
	{"1.x", 0, ErrInvalidSize},
	{"-12K", 0, ErrInvalidSize},
	{"-0", 0, ErrInvalidSize},
}

func TestStrtosz(t *testing.T) {
	for _, c := range sizes {
		got, err := Strtosz(c.in)
		if got != c.want || !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
			t.Errorf("Strtosz(%q) = %d, %v; want %d, %v", c.in, got, err, c.want, c.err)
		}
	}
}

// Every row of the table, given to qemu-img create as the image size:
// qemu-img answers the value, "Must be between 0 and INT64_MAX" for
// ERANGE and values above int64, or "You may use k, M, G..." for EINVAL.
func TestStrtoszAgainstQemuImg(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("BLOCKD_REQUIRE_QEMU") == "1" {
			t.Fatal("qemu-img is required (BLOCKD_REQUIRE_QEMU=1) but missing")
		}
		t.Skip("SKIPPING: qemu-img not installed; install qemu-utils to run this test")
	}
	img := filepath.Join(t.TempDir(), "x")
	for _, c := range sizes {
		if strings.HasPrefix(c.in, "-") || c.in == "" {
			continue // an option or a missing argument to qemu-img
		}
		out, _ := exec.Command("qemu-img", "create", "-f", "raw", img, c.in).CombinedOutput()
		_ = os.Remove(img)
		var want string
		switch {
		case c.err == ErrInvalidSize:
			want = "You may use k, M, G, T, P or E suffixes"
		case c.err == ErrSizeRange || c.want > math.MaxInt64:
			want = "Must be between 0 and 9223372036854775807"
		default:
			want = "size=" + strconv.FormatUint(c.want, 10) + "\n"
		}
		if !strings.Contains(string(out)+"\n", want) {
			t.Errorf("qemu-img create %q: %q, want %q", c.in, out, want)
		}
	}
}

func TestIDWellFormed(t *testing.T) {
	for id, want := range map[string]bool{
		"a": true, "node-1.x_y": true, "Z9": true,
		"": false, "1a": false, "-a": false, "_a": false, "a b": false, "a/b": false, "é": false, "a,b": false,
	} {
		if IDWellFormed(id) != want {
			t.Errorf("IDWellFormed(%q) = %v", id, !want)
		}
	}
}
