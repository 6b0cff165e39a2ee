package tools

import (
	"blockd/internal/qdict"
	"testing"
	"time"
)

func TestSizeToStr(t *testing.T) {
	for v, want := range map[int64]string{
		0: "0 B", 512: "512 B", 1000: "0.977 KiB", 4194304: "4 MiB", 331776: "324 KiB",
		1310720: "1.25 MiB", 1 << 30: "1 GiB", 1073741824 * 1000: "0.977 TiB",
	} {
		if got := sizeToStr(v); got != want {
			t.Errorf("sizeToStr(%d) = %q, want %q", v, got, want)
		}
	}
}

func TestCvtstrTimestr(t *testing.T) {
	for v, want := range map[float64]string{
		1048576: "1 MiB", 1536: "1.500 KiB", 0: "0 bytes", 20: "20 bytes", 319772672: "304.959 MiB",
	} {
		if got := cvtstr(v); got != want {
			t.Errorf("cvtstr(%v) = %q, want %q", v, got, want)
		}
	}
	if got := timestr(3*time.Millisecond, false); got != "00.00 sec" {
		t.Errorf("timestr = %q", got)
	}
	if got := timestr(61500*time.Millisecond, false); got != "0:01:01.50" {
		t.Errorf("timestr = %q", got)
	}
	if got := timestr(0, true); got != "0:00:00.00" {
		t.Errorf("timestr = %q", got)
	}
}

// The key order of qemu-img's JSON, as QEMU 7.2 prints it.
func TestQDictOrder(t *testing.T) {
	d := qdict.Dict{}.Set("filename", "a").Set("format", "qcow2").Set("check-errors", int64(0)).
		Set("image-end-offset", int64(1)).Set("total-clusters", int64(2)).Set("allocated-clusters", int64(3))
	want := `{
    "image-end-offset": 1,
    "total-clusters": 2,
    "check-errors": 0,
    "allocated-clusters": 3,
    "filename": "a",
    "format": "qcow2"
}`
	if got := prettyJSON(d); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if got := quoteJSON("a\"\\\n\x01é😀"); got != `"a\"\\\n\u0001\u00E9\uD83D\uDE00"` {
		t.Errorf("quoteJSON = %s", got)
	}
	if got := prettyJSON([]any{qdict.Dict{}.Set("a", true)}); got != "[\n    {\n        \"a\": true\n    }\n]" {
		t.Errorf("list: %q", got)
	}
}

func TestGetopt(t *testing.T) {
	spec := optSpec{short: "f:qP:", permute: true, long: map[string]longOpt{"output": {'O', true}, "help": {'h', false}}}
	opts, ops, err := getopt([]string{"a", "-qfqcow2", "--output=json", "b", "-P", "0xaa", "--output", "human", "--", "-c"}, spec)
	if err != nil {
		t.Fatal(err)
	}
	want := []opt{{'q', ""}, {'f', "qcow2"}, {'O', "json"}, {'P', "0xaa"}, {'O', "human"}}
	if len(opts) != len(want) {
		t.Fatalf("opts %v", opts)
	}
	for i := range want {
		if opts[i] != want[i] {
			t.Fatalf("opts %v, want %v", opts, want)
		}
	}
	if len(ops) != 3 || ops[0] != "a" || ops[1] != "b" || ops[2] != "-c" {
		t.Fatalf("operands %v", ops)
	}
	for _, bad := range [][]string{{"-x"}, {"-f"}, {"--nope"}, {"--help=1"}, {"--output"}} {
		if _, _, err := getopt(bad, spec); err == nil {
			t.Errorf("getopt(%v) accepted", bad)
		}
	}
	// Without permutation, parsing stops at the first operand.
	_, ops, _ = getopt([]string{"-q", "0", "-P", "1"}, optSpec{short: "qP:"})
	if len(ops) != 3 {
		t.Errorf("operands %v", ops)
	}
}
