package schema

import (
	"context"
	"encoding/json"
	"testing"
)

// The args below are what key=value syntax parses into (every scalar a
// string). Each "want" text is what qemu-storage-daemon 7.2.22 printed
// for the equivalent command line, given in the comment above the table.

func runKeyvalCases[T any](t *testing.T, cases []decodeCase) {
	t.Helper()
	for _, c := range cases {
		var v T
		err := DecodeKeyval(json.RawMessage(c.args), &v)
		if err == nil || err.Error() != c.want {
			t.Errorf("%s:\n got %v\nwant %q", c.args, err, c.want)
		}
	}
}

// QSD: qemu-storage-daemon --blockdev 'driver=null-co,node-name=x,size=abc'
// and the like (driver=raw,file.driver=null-co,file.size=x for the nested
// ones, driver=blkdebug,image=f,inject-error.0.event=... for lists).
var keyvalBlockdevCases = []decodeCase{
	{`{"driver":"null-co","node-name":"x","size":"abc"}`, "Parameter 'size' expects integer"},
	{`{"driver":"null-co","node-name":"x","size":"1.5"}`, "Parameter 'size' expects integer"},
	{`{"driver":"null-co","node-name":"x","size":"99999999999999999999"}`, "Parameter 'size' expects integer"},
	{`{"driver":"null-co","node-name":"x","size":"9223372036854775808"}`, "Parameter 'size' expects integer"},
	{`{"driver":"null-co","node-name":"x","size":"5 "}`, "Parameter 'size' expects integer"},
	{`{"driver":"null-co","node-name":"x","size":""}`, "Parameter 'size' expects integer"},
	{`{"driver":"null-co","node-name":"x","size":"0x"}`, "Parameter 'size' expects integer"},
	{`{"driver":"null-co","node-name":"x","size":"08"}`, "Parameter 'size' expects integer"},
	{`{"driver":"null-co","node-name":"x","latency-ns":"abc"}`, "Parameter 'latency-ns' expects integer"},
	{`{"driver":"null-co","node-name":"x","latency-ns":"18446744073709551616"}`, "Parameter 'latency-ns' expects integer"},
	{`{"driver":"null-co","node-name":"x","latency-ns":"-18446744073709551616"}`, "Parameter 'latency-ns' expects integer"},
	{`{"driver":"null-co","node-name":"x","latency-ns":"0x"}`, "Parameter 'latency-ns' expects integer"},
	{`{"driver":"null-co","node-name":"x","read-zeroes":"bogus"}`, "Parameter 'read-zeroes' expects 'on' or 'off'"},
	{`{"driver":"null-co","node-name":"x","read-zeroes":"ON"}`, "Parameter 'read-zeroes' expects 'on' or 'off'"},
	{`{"driver":"null-co","node-name":"x","read-zeroes":{"a":"1"}}`, "Parameters 'read-zeroes.*' are unexpected"},
	{`{"driver":"null-co","node-name":{"a":"x"}}`, "Parameters 'node-name.*' are unexpected"},
	{`{"driver":"null-co","node-name":"x","cache":"x"}`, "Invalid parameter type for 'cache', expected: object"},
	{`{"driver":"null-co","node-name":"x","bogus":"1"}`, "Parameter 'bogus' is unexpected"},
	{`{"driver":"raw","node-name":"x","file":{"driver":"null-co","read-zeroes":"bogus"}}`, "Parameter 'file.read-zeroes' expects 'on' or 'off'"},
	{`{"driver":"raw","node-name":"x","file":{"driver":"null-co","size":"x"}}`, "Parameter 'file.size' expects integer"},
	{`{"driver":"raw","node-name":"x","file":{"driver":"null-co","size":"0x1g"}}`, "Parameter 'file.size' expects integer"},
	{`{"driver":"raw","node-name":"x","file":{"driver":"null-co","size":{"a":"x"}}}`, "Parameters 'file.size.*' are unexpected"},
	{`{"driver":"blkdebug","node-name":"x","image":"f","inject-error":[{"event":"nope"}]}`, "Parameter 'event' does not accept value 'nope'"},
	{`{"driver":"blkdebug","node-name":"x","image":"f","inject-error":[{"errno":"x","event":"l1_update"}]}`, "Parameter 'inject-error.0.errno' expects integer"},
	{`{"driver":"blkdebug","node-name":"x","image":"f","inject-error":[{"event":"l1_update"},{"foo":"1"}]}`, "Parameter 'inject-error.1.event' is missing"},
	{`{"driver":"blkdebug","node-name":"x","image":"f","inject-error":[{"event":"l1_update","once":"x"}]}`, "Parameter 'inject-error.0.once' expects 'on' or 'off'"},
	{`{"driver":"blkdebug","node-name":"x","image":"f","take-child-perms":["bogus"]}`, "Parameter 'null' does not accept value 'bogus'"},
	{`{"driver":"qcow2","node-name":"x","file":{"driver":"file"}}`, "Parameter 'file.filename' is missing"},
	{`{"driver":"qcow2","node-name":"x","file":{"a":{"b":"1"}}}`, "Parameter 'file.driver' is missing"},
	{`{"driver":"qcow2","node-name":"x","file":"f","overlap-check":"bogus"}`, "Parameter 'overlap-check' does not accept value 'bogus'"},
	{`{"driver":"qcow2","node-name":"x","file":"f","overlap-check":{"template":"bogus"}}`, "Parameter 'template' does not accept value 'bogus'"},
}

func TestKeyvalBlockdev(t *testing.T) { runKeyvalCases[tBlockdevOptions](t, keyvalBlockdevCases) }

// QSD: qemu-storage-daemon --object 'memory-backend-file,id=m,mem-path=/x,size=abc'
// and the like ('secret_keyring,id=s,serial=x').
var keyvalObjectCases = []decodeCase{
	{`{"qom-type":"memory-backend-file","id":"m","mem-path":"/x","size":"abc"}`, "Parameter 'size' expects size"},
	{`{"qom-type":"memory-backend-file","id":"m","mem-path":"/x","size":"-1"}`, "Parameter 'size' expects size"},
	{`{"qom-type":"memory-backend-file","id":"m","mem-path":"/x","size":"16E"}`, "Parameter 'size' expects size"},
	{`{"qom-type":"memory-backend-file","id":"m","mem-path":"/x","size":"1.5"}`, "Parameter 'size' expects size"},
	{`{"qom-type":"memory-backend-file","id":"m","mem-path":"/x","size":"1.5e3k"}`, "Parameter 'size' expects size"},
	{`{"qom-type":"memory-backend-file","id":"m","mem-path":"/x","size":"1kB"}`, "Parameter 'size' expects size"},
	{`{"qom-type":"memory-backend-file","id":"m","mem-path":"/x","size":".5k"}`, "Parameter 'size' expects size"},
	{`{"qom-type":"memory-backend-file","id":"m","mem-path":"/x","size":"1","host-nodes":["70000"]}`, "Parameter 'null' expects uint16_t"},
	{`{"qom-type":"memory-backend-file","id":"m","mem-path":"/x","size":"1","host-nodes":["x"]}`, "Parameter 'host-nodes.0' expects integer"},
	{`{"qom-type":"memory-backend-file","id":"m","mem-path":"/x","size":"1","prealloc":"x"}`, "Parameter 'prealloc' expects 'on' or 'off'"},
	{`{"qom-type":"secret_keyring","id":"s","serial":"2147483648"}`, "Parameter 'serial' expects int32_t"},
	{`{"qom-type":"secret_keyring","id":"s","serial":"x"}`, "Parameter 'serial' expects integer"},
}

func TestKeyvalObject(t *testing.T) { runKeyvalCases[tObjectOptions](t, keyvalObjectCases) }

// Values QSD accepted at the decoding stage (it went on to open the node
// or to look the object type up); the numbers are C's strtoll/strtoull
// (base 0) and qemu_strtosz readings.
func TestKeyvalValues(t *testing.T) {
	ints := map[string]int64{"0x10": 16, "010": 8, " 5": 5, "+5": 5, "-5": -5, "0X1f": 31, "\t7": 7,
		"-0x10": -16, "-9223372036854775808": -1 << 63}
	for s, want := range ints {
		var o tBlockdevOptions
		args, _ := json.Marshal(map[string]any{"driver": "null-co", "size": s})
		if err := DecodeKeyval(args, &o); err != nil || *o.Null.Size != want {
			t.Errorf("size=%q: %v", s, err)
		}
	}
	uints := map[string]uint64{"-1": 1<<64 - 1, "-18446744073709551615": 1, "18446744073709551615": 1<<64 - 1}
	for s, want := range uints {
		var o tBlockdevOptions
		args, _ := json.Marshal(map[string]any{"driver": "null-co", "latency-ns": s})
		if err := DecodeKeyval(args, &o); err != nil || *o.Null.LatencyNs != want {
			t.Errorf("latency-ns=%q: %v", s, err)
		}
	}
	bools := map[string]bool{"on": true, "yes": true, "true": true, "y": true, "off": false, "no": false, "false": false, "n": false}
	for s, want := range bools {
		var o tBlockdevOptions
		args, _ := json.Marshal(map[string]any{"driver": "null-co", "read-zeroes": s})
		if err := DecodeKeyval(args, &o); err != nil || *o.Null.ReadZeroes != want {
			t.Errorf("read-zeroes=%q: %v", s, err)
		}
	}
	sizes := map[string]uint64{"1.5k": 1536, "0x10k": 16 << 10, "15E": 15 << 60, " 1k": 1024, "1b": 1,
		"1.k": 1024, "1.": 1, "0x10": 16, "1.0005k": 1025, "2M": 2 << 20, "+3g": 3 << 30}
	for s, want := range sizes {
		var o tObjectOptions
		args, _ := json.Marshal(map[string]any{"qom-type": "memory-backend-file", "id": "m", "mem-path": "/x", "size": s})
		if err := DecodeKeyval(args, &o); err != nil || uint64(o.MemoryBackendFile.Size) != want {
			t.Errorf("size=%q: %v %v", s, err, o.MemoryBackendFile)
		}
	}
}

// Not from QSD (no keyval option of QSD 7.2 has a 'number' member or
// receives a non-string scalar): texts of qobject_input_type_number_keyval
// and qobject_input_get_keyval in QEMU 7.2's source.
func TestKeyvalSourceDerived(t *testing.T) {
	runKeyvalCases[tSizedArgs](t, []decodeCase{
		{`{"n":"x"}`, "Invalid parameter type for 'n', expected: number"},
		{`{"n":"inf"}`, "Invalid parameter type for 'n', expected: number"},
		{`{"i8":5}`, "Internal error: parameter i8 invalid"},
	})
	var s tSizedArgs
	if err := DecodeKeyval(json.RawMessage(`{"n":" 2.5","u8":"0xff","a":"raw"}`), &s); err != nil ||
		*s.N != 2.5 || *s.U8 != 255 || string(s.A) != `"raw"` {
		t.Fatalf("%v %+v", err, s)
	}
}

func TestCallWithKeyval(t *testing.T) {
	r := testRegistry(t)
	ctx := WithKeyval(context.Background(), true)
	// QSD: --blockdev driver=raw,node-name=x,file.driver=null-co,file.size=x
	_, err := r.Call(ctx, "blockdev-add", json.RawMessage(`{"driver":"raw","file":{"driver":"null-co","size":"x"}}`))
	if err == nil || err.Error() != "Parameter 'file.size' expects integer" {
		t.Fatalf("keyval call: %v", err)
	}
	if _, err := r.Call(ctx, "blockdev-add", json.RawMessage(`{"driver":"raw","file":{"driver":"null-co","size":"0x10"}}`)); err != nil {
		t.Fatal(err)
	}
	// Without the mark, the same string is a type error.
	_, err = r.Call(WithKeyval(ctx, false), "blockdev-add", json.RawMessage(`{"driver":"raw","file":{"driver":"null-co","size":"1"}}`))
	if err == nil || err.Error() != "Invalid parameter type for 'file.size', expected: integer" {
		t.Fatalf("JSON call: %v", err)
	}
}
