package schema

import (
	"encoding/json"
	"errors"
	"testing"
)

// Every "want" text in the tables below was produced by
// qemu-storage-daemon 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18) for the same
// arguments on the command named above the table, run as
// `qemu-storage-daemon --chardev stdio,id=s --monitor chardev=s`. The one
// exception is sourceDerivedCases, whose member types no QSD command
// accepts.

type decodeCase struct {
	args string
	want string
}

func runDecodeCases[T any](t *testing.T, cases []decodeCase) {
	t.Helper()
	for _, c := range cases {
		var v T
		err := Decode(json.RawMessage(c.args), &v)
		if err == nil {
			t.Errorf("%s: no error, want %q", c.args, c.want)
			continue
		}
		var qe *Error
		if !errors.As(err, &qe) || qe.Class != ClassGeneric {
			t.Errorf("%s: error %#v is not a GenericError", c.args, err)
		}
		if err.Error() != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.args, err.Error(), c.want)
		}
	}
}

// QSD: blockdev-add (flat union BlockdevOptions, alternates BlockdevRef,
// BlockdevRefOrNull and Qcow2OverlapChecks, list of enums).
var blockdevAddCases = []decodeCase{
	{`{"node-name":"x"}`, "Parameter 'driver' is missing"},
	{`{"driver":5}`, "Invalid parameter type for 'driver', expected: string"},
	{`{"driver":"foo","node-name":"x"}`, "Parameter 'driver' does not accept value 'foo'"},
	{`{"driver":""}`, "Parameter 'driver' does not accept value ''"},
	{`{"driver":"file","node-name":"x"}`, "Parameter 'filename' is missing"},
	{`{"driver":"file","filename":"/x","bogus":1}`, "Parameter 'bogus' is unexpected"},
	{`{"driver":"qcow2","node-name":"x"}`, "Parameter 'file' is missing"},
	{`{"driver":"qcow2","node-name":null,"file":"f"}`, "Invalid parameter type for 'node-name', expected: string"},
	{`{"driver":"qcow2","node-name":"x","file":{"driver":5}}`, "Invalid parameter type for 'file.driver', expected: string"},
	{`{"driver":"qcow2","node-name":"x","file":{"driver":"foo"}}`, "Parameter 'driver' does not accept value 'foo'"},
	{`{"driver":"qcow2","node-name":"x","file":{"driver":"file"}}`, "Parameter 'file.filename' is missing"},
	{`{"driver":"qcow2","node-name":"x","file":{"driver":"file","filename":5}}`, "Invalid parameter type for 'file.filename', expected: string"},
	{`{"driver":"qcow2","node-name":"x","file":{"driver":"file","filename":"/x","bogus":1}}`, "Parameter 'file.bogus' is unexpected"},
	{`{"driver":"qcow2","node-name":"x","file":{"driver":"file","filename":"/x","read-only":"y"}}`, "Invalid parameter type for 'file.read-only', expected: boolean"},
	{`{"driver":"qcow2","node-name":"x","file":{"driver":"qcow2","file":{"driver":"file"}}}`, "Parameter 'file.file.filename' is missing"},
	{`{"driver":"qcow2","file":{"driver":"raw"},"node-name":"a"}`, "Parameter 'file.file' is missing"},
	{`{"driver":"raw","node-name":"x","file":{"driver":"qcow2","file":"g","backing":{"driver":"file"}}}`, "Parameter 'file.backing.filename' is missing"},
	// alternates: a JSON kind with no branch names the alternate, bare name
	{`{"driver":"qcow2","node-name":"x","file":5}`, "Invalid parameter type for 'file', expected: BlockdevRef"},
	{`{"driver":"qcow2","node-name":"x","file":[]}`, "Invalid parameter type for 'file', expected: BlockdevRef"},
	{`{"driver":"qcow2","node-name":"x","file":null}`, "Invalid parameter type for 'file', expected: BlockdevRef"},
	{`{"driver":"qcow2","node-name":"x","file":{"driver":"qcow2","file":5}}`, "Invalid parameter type for 'file', expected: BlockdevRef"},
	{`{"driver":"qcow2","node-name":"x","file":"f","backing":5}`, "Invalid parameter type for 'backing', expected: BlockdevRefOrNull"},
	{`{"driver":"qcow2","node-name":"x","file":"f","overlap-check":"bogus"}`, "Parameter 'overlap-check' does not accept value 'bogus'"},
	{`{"driver":"qcow2","node-name":"x","file":"f","overlap-check":5}`, "Invalid parameter type for 'overlap-check', expected: Qcow2OverlapChecks"},
	{`{"driver":"qcow2","node-name":"x","file":"f","overlap-check":{"template":"x"}}`, "Parameter 'template' does not accept value 'x'"},
	{`{"driver":"qcow2","node-name":"x","file":"f","overlap-check":{"zz":1}}`, "Parameter 'overlap-check.zz' is unexpected"},
	{`{"driver":"qcow2","node-name":"x","file":"f","overlap-check":{"main-header":1}}`, "Invalid parameter type for 'overlap-check.main-header', expected: boolean"},
	// base members (cache, discard, read-only) are visited before variant members
	{`{"driver":"qcow2","file":{"driver":"raw","file":"f","size":"q"},"node-name":"x","cache":{"direct":1}}`, "Invalid parameter type for 'cache.direct', expected: boolean"},
	{`{"driver":"qcow2","file":"f","node-name":"a","discard":"x","read-only":1}`, "Parameter 'discard' does not accept value 'x'"},
	// a known member's error wins over an unexpected key
	{`{"driver":"qcow2","node-name":"x","file":"f","bogus":1,"read-only":"q"}`, "Invalid parameter type for 'read-only', expected: boolean"},
	{`{"driver":"raw","node-name":"x","file":"f","offset":1.5}`, "Invalid parameter type for 'offset', expected: integer"},
	// lists: full names index elements, enum checks print "null"
	{`{"driver":"blkdebug","node-name":"x","image":"f","take-child-perms":["consistent-read","bogus"]}`, "Parameter 'null' does not accept value 'bogus'"},
	{`{"driver":"blkdebug","node-name":"x","image":"f","take-child-perms":["consistent-read",5]}`, "Invalid parameter type for 'take-child-perms[1]', expected: string"},
	{`{"driver":"blkdebug","node-name":"x","image":"f","take-child-perms":"x"}`, "Invalid parameter type for 'take-child-perms', expected: array"},
	{`{"driver":"blkdebug","node-name":"x","image":"f","inject-error":[{"event":"l1_update","errno":1.5}]}`, "Invalid parameter type for 'inject-error[0].errno', expected: integer"},
	{`{"driver":"blkdebug","node-name":"x","image":"f","inject-error":[{"event":"nope"}]}`, "Parameter 'event' does not accept value 'nope'"},
	{`{"driver":"blkdebug","node-name":"x","image":"f","inject-error":[{}]}`, "Parameter 'inject-error[0].event' is missing"},
}

func TestDecodeBlockdevAdd(t *testing.T) { runDecodeCases[tBlockdevOptions](t, blockdevAddCases) }

// QSD: blockdev-reopen (list of unions: options[N].member).
var blockdevReopenCases = []decodeCase{
	{``, "Parameter 'options' is missing"},
	{`{}`, "Parameter 'options' is missing"},
	{`{"options":{}}`, "Invalid parameter type for 'options', expected: array"},
	{`{"options":[5]}`, "Invalid parameter type for 'options[0]', expected: object"},
	{`{"options":[{"driver":"raw","node-name":"a","file":"f"},{"node-name":"b"}]}`, "Parameter 'options[1].driver' is missing"},
	{`{"options":[{"driver":"raw","node-name":"a","file":"f"},{"driver":"raw","file":{"driver":"nope"}}]}`, "Parameter 'driver' does not accept value 'nope'"},
	{`{"options":[{"driver":"raw","node-name":"a","file":"f","zz":1}]}`, "Parameter 'options[0].zz' is unexpected"},
	{`{"options":[{"driver":"raw","node-name":"a","file":"f"},{"driver":"raw","file":"f","backing":5}]}`, "Parameter 'options[1].backing' is unexpected"},
	{`{"options":[{"driver":"raw","file":{"driver":"file"}}]}`, "Parameter 'options[0].file.filename' is missing"},
	{`{"options":[{"driver":"raw","file":{"driver":5}}]}`, "Invalid parameter type for 'options[0].file.driver', expected: string"},
	{`{"options":[{"driver":"qcow2","file":"f","backing":[1]}]}`, "Invalid parameter type for 'backing', expected: BlockdevRefOrNull"},
	{`{"options":[{"driver":"qcow2","file":"f","backing":{"driver":"raw","file":{"driver":"file","filename":1}}}]}`, "Invalid parameter type for 'options[0].backing.file.filename', expected: string"},
}

func TestDecodeBlockdevReopen(t *testing.T) {
	runDecodeCases[tBlockdevReopenArgs](t, blockdevReopenCases)
}

// QSD: block-commit ('int' speed, enum on-error, str members).
var blockCommitCases = []decodeCase{
	{`{"speed":1}`, "Parameter 'device' is missing"},
	{`{"device":5}`, "Invalid parameter type for 'device', expected: string"},
	{`{"device":"d","speed":1.5}`, "Invalid parameter type for 'speed', expected: integer"},
	{`{"device":"d","speed":"1"}`, "Invalid parameter type for 'speed', expected: integer"},
	{`{"device":"d","speed":1.0}`, "Invalid parameter type for 'speed', expected: integer"},
	{`{"device":"d","speed":1e3}`, "Invalid parameter type for 'speed', expected: integer"},
	{`{"device":"d","speed":9223372036854775808}`, "Invalid parameter type for 'speed', expected: integer"},
	{`{"device":"d","speed":-9223372036854775809}`, "Invalid parameter type for 'speed', expected: integer"},
	{`{"device":"d","speed":null}`, "Invalid parameter type for 'speed', expected: integer"},
	{`{"device":"d","speed":true}`, "Invalid parameter type for 'speed', expected: integer"},
	{`{"device":"d","on-error":"bogus"}`, "Parameter 'on-error' does not accept value 'bogus'"},
	{`{"device":"d","on-error":5}`, "Invalid parameter type for 'on-error', expected: string"},
	{`{"device":"d","job-id":5,"zzz":1}`, "Invalid parameter type for 'job-id', expected: string"},
	{`{"device":"d","zzz":1}`, "Parameter 'zzz' is unexpected"},
}

func TestDecodeBlockCommit(t *testing.T) { runDecodeCases[tBlockCommitArgs](t, blockCommitCases) }

// QSD: block-dirty-bitmap-add (granularity is 'uint32').
var bitmapAddCases = []decodeCase{
	{`{"node":"n","name":"b","granularity":4294967296}`, "Parameter 'granularity' expects uint32_t"},
	{`{"node":"n","name":"b","granularity":-1}`, "Parameter 'granularity' expects uint32_t"},
	{`{"node":"n","name":"b","granularity":1.5}`, "Parameter 'granularity' expects uint64"},
	{`{"node":"n","name":"b","granularity":"x"}`, "Parameter 'granularity' expects uint64"},
	{`{"node":"n","name":"b","granularity":18446744073709551616}`, "Parameter 'granularity' expects uint64"},
}

func TestDecodeBitmapAdd(t *testing.T) { runDecodeCases[tBlockDirtyBitmapAddArgs](t, bitmapAddCases) }

// QSD: block-set-write-threshold (write-threshold is 'uint64'; -1 and
// 18446744073709551615 pass decoding there and fail later with
// "Device 'n' not found").
var writeThresholdCases = []decodeCase{
	{`{"node-name":"n","write-threshold":1.5}`, "Parameter 'write-threshold' expects uint64"},
	{`{"node-name":"n","write-threshold":"x"}`, "Parameter 'write-threshold' expects uint64"},
	{`{"node-name":"n","write-threshold":18446744073709551616}`, "Parameter 'write-threshold' expects uint64"},
	{`{"node-name":"n","write-threshold":1e3}`, "Parameter 'write-threshold' expects uint64"},
}

func TestDecodeWriteThreshold(t *testing.T) {
	runDecodeCases[tBlockSetWriteThresholdArgs](t, writeThresholdCases)
}

// QSD: block-dirty-bitmap-merge (list of alternate BlockDirtyBitmapOrStr:
// the alternate check prints "null" for a list element).
var bitmapMergeCases = []decodeCase{
	{`{"node":"n","target":"t","bitmaps":["a",5]}`, "Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr"},
	{`{"node":"n","target":"t","bitmaps":["a",null]}`, "Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr"},
	{`{"node":"n","target":"t","bitmaps":["a",{"node":"n"}]}`, "Parameter 'bitmaps[1].name' is missing"},
	{`{"node":"n","target":"t","bitmaps":["a",{"node":"n","name":"x","q":1}]}`, "Parameter 'bitmaps[1].q' is unexpected"},
}

func TestDecodeBitmapMerge(t *testing.T) {
	runDecodeCases[tBlockDirtyBitmapMergeArgs](t, bitmapMergeCases)
}

// QSD: x-blockdev-set-iothread (alternate StrOrNull).
var setIothreadCases = []decodeCase{
	{`{"node-name":"n"}`, "Parameter 'iothread' is missing"},
	{`{"node-name":"n","iothread":5}`, "Invalid parameter type for 'iothread', expected: StrOrNull"},
	{`{"node-name":"n","iothread":[]}`, "Invalid parameter type for 'iothread', expected: StrOrNull"},
}

func TestDecodeSetIothread(t *testing.T) {
	runDecodeCases[tXBlockdevSetIothreadArgs](t, setIothreadCases)
}

// QSD: object-add (union ObjectOptions on qom-type; int32 serial, size,
// list of uint16).
var objectAddCases = []decodeCase{
	{`{"id":"m"}`, "Parameter 'qom-type' is missing"},
	{`{"qom-type":"nope","id":"m"}`, "Parameter 'qom-type' does not accept value 'nope'"},
	{`{"qom-type":"can-bus","id":"m","x":1}`, "Parameter 'x' is unexpected"},
	{`{"qom-type":"secret_keyring","id":"s","serial":2147483648}`, "Parameter 'serial' expects int32_t"},
	{`{"qom-type":"secret_keyring","id":"s","serial":-2147483649}`, "Parameter 'serial' expects int32_t"},
	{`{"qom-type":"secret_keyring","id":"s","serial":1.5}`, "Invalid parameter type for 'serial', expected: integer"},
	{`{"qom-type":"memory-backend-file","id":"m","mem-path":"/x","size":1.5}`, "Parameter 'size' expects uint64"},
	{`{"qom-type":"memory-backend-file","id":"m","mem-path":"/x","size":"1"}`, "Parameter 'size' expects uint64"},
	{`{"qom-type":"memory-backend-file","id":"m","mem-path":"/x","size":1,"host-nodes":[1,70000]}`, "Parameter 'null' expects uint16_t"},
	{`{"qom-type":"memory-backend-file","id":"m","mem-path":"/x","size":1,"host-nodes":[1,"a"]}`, "Parameter 'host-nodes[1]' expects uint64"},
	{`{"qom-type":"memory-backend-file","id":"m","mem-path":"/x","size":1,"host-nodes":[1,1.5]}`, "Parameter 'host-nodes[1]' expects uint64"},
	{`{"qom-type":"memory-backend-file","id":"m","mem-path":"/x","size":1,"policy":"zz"}`, "Parameter 'policy' does not accept value 'zz'"},
}

func TestDecodeObjectAdd(t *testing.T) { runDecodeCases[tObjectOptions](t, objectAddCases) }

// QSD: nbd-server-start (union SocketAddressLegacy inside a struct:
// addr.data.member; uint32 max-connections).
var nbdServerStartCases = []decodeCase{
	{`{"addr":"x"}`, "Invalid parameter type for 'addr', expected: object"},
	{`{"addr":{"type":"unix","data":{"path":5}}}`, "Invalid parameter type for 'addr.data.path', expected: string"},
	{`{"addr":{"type":"inet","data":{"host":"h","port":"1","zz":1}},"max-connections":-1}`, "Parameter 'addr.data.zz' is unexpected"},
	{`{"addr":{"type":"unix","data":{"path":"/x"}},"max-connections":4294967296}`, "Parameter 'max-connections' expects uint32_t"},
}

func TestDecodeNbdServerStart(t *testing.T) {
	runDecodeCases[tNbdServerStartArgs](t, nbdServerStartCases)
}

// QSD: query-version (no arguments) and the QMP layer: the
// "arguments" texts come from QSD's dispatcher for
// {"execute":"query-version","arguments":[]} and its JSON parser for a
// duplicated key in blockdev-add.
var noArgsCases = []decodeCase{
	{`{"x":1}`, "Parameter 'x' is unexpected"},
	{`[]`, "QMP input member 'arguments' must be an object"},
	{`null`, "QMP input member 'arguments' must be an object"},
	{`{"a":1,"a":2}`, "JSON parse error, duplicate key"},
}

func TestDecodeNoArgs(t *testing.T) { runDecodeCases[NoArgs](t, noArgsCases) }

// Not from QSD: no QSD 7.2 command takes a 'number', a bare 'null',
// int8/int16/uint8 or an alternate with an integer branch as an argument
// ('number' appears only in query-blockstats' return). These texts are
// those of qobject_input_type_number/null and visit_type_intN/uintN in
// QEMU 7.2's source, whose uint32_t/int32_t/uint16_t siblings are
// verified above.
var sourceDerivedCases = []decodeCase{
	{`{"n":"x"}`, "Invalid parameter type for 'n', expected: number"},
	{`{"n":true}`, "Invalid parameter type for 'n', expected: number"},
	{`{"nul":1}`, "Invalid parameter type for 'nul', expected: null"},
	{`{"i8":128}`, "Parameter 'i8' expects int8_t"},
	{`{"i8":-129}`, "Parameter 'i8' expects int8_t"},
	{`{"i16":32768}`, "Parameter 'i16' expects int16_t"},
	{`{"u8":256}`, "Parameter 'u8' expects uint8_t"},
	{`{"u16":65536}`, "Parameter 'u16' expects uint16_t"},
	{`{"m":[1,"x"]}`, "Invalid parameter type for 'null', expected: IntOrNumber"},
}

func TestDecodeSourceDerived(t *testing.T) { runDecodeCases[tSizedArgs](t, sourceDerivedCases) }

func TestDecodeValues(t *testing.T) {
	var o tBlockdevOptions
	err := Decode(json.RawMessage(`{"driver":"qcow2","node-name":"top","file":{"driver":"file","filename":"/img"},
		"backing":null,"overlap-check":"all","cache":{"direct":true}}`), &o)
	if err != nil {
		t.Fatal(err)
	}
	if o.Driver != "qcow2" || *o.NodeName != "top" || !*o.Cache.Direct || o.Qcow2 == nil || o.Raw != nil {
		t.Fatalf("bad union decode: %+v", o)
	}
	q := o.Qcow2
	if f := q.File.Definition; f == nil || q.File.Reference != nil || f.File == nil || f.File.Filename != "/img" {
		t.Fatalf("file branch: %+v", q.File)
	}
	if b := q.Backing; b == nil || b.Null == nil || b.Definition != nil || b.Reference != nil {
		t.Fatalf("backing branch: %+v", q.Backing)
	}
	if c := q.OverlapCheck; c == nil || c.Mode == nil || *c.Mode != "all" || c.Flags != nil {
		t.Fatalf("overlap-check branch: %+v", q.OverlapCheck)
	}

	// host_device shares the file variant; vvfat has no variant members.
	o = tBlockdevOptions{}
	if err := Decode(json.RawMessage(`{"driver":"host_device","filename":"/dev/x"}`), &o); err != nil || o.File == nil || o.File.Filename != "/dev/x" {
		t.Fatalf("shared variant: %v %+v", err, o)
	}
	if err := Decode(json.RawMessage(`{"driver":"vvfat"}`), &o); err != nil || o.File != nil {
		t.Fatalf("variant-less value: %v %+v", err, o)
	}

	// uint64 takes negative integers (wrapping), as QSD does for
	// block-set-write-threshold -1; sizes and list members too.
	var w tBlockSetWriteThresholdArgs
	if err := Decode(json.RawMessage(`{"node-name":"n","write-threshold":-1}`), &w); err != nil || w.WriteThreshold != 1<<64-1 {
		t.Fatalf("uint64 -1: %v %d", err, w.WriteThreshold)
	}
	if err := Decode(json.RawMessage(`{"node-name":"n","write-threshold":18446744073709551615}`), &w); err != nil || w.WriteThreshold != 1<<64-1 {
		t.Fatalf("uint64 max: %v %d", err, w.WriteThreshold)
	}
	var m tBlockDirtyBitmapMergeArgs
	if err := Decode(json.RawMessage(`{"node":"n","target":"t","bitmaps":["a",{"node":"x","name":"y"}]}`), &m); err != nil ||
		len(m.Bitmaps) != 2 || *m.Bitmaps[0].Local != "a" || m.Bitmaps[1].External.Name != "y" {
		t.Fatalf("list of alternates: %v %+v", err, m)
	}
	var s tSizedArgs
	if err := Decode(json.RawMessage(`{"n":3,"i8":-128,"u8":255,"nul":null,"a":{"x": [1, 2]},"m":[1,2.5]}`), &s); err != nil {
		t.Fatal(err)
	}
	if *s.N != 3 || *s.I8 != -128 || *s.U8 != 255 || s.Nul == nil || string(s.A) != `{"x": [1, 2]}` ||
		*s.M[0].I != 1 || s.M[0].F != nil || *s.M[1].F != 2.5 {
		t.Fatalf("sized: %+v", s)
	}
	// Empty arguments are {}; an empty list is present, not absent.
	var c tBlockCommitArgs
	if err := Decode(nil, &c); err == nil || err.Error() != "Parameter 'device' is missing" {
		t.Fatalf("nil args: %v", err)
	}
	var bl tBlockdevOptions
	if err := Decode(json.RawMessage(`{"driver":"blkdebug","image":"i","take-child-perms":[]}`), &bl); err != nil ||
		bl.Blkdebug.TakeChildPerms == nil || bl.Blkdebug.InjectError != nil {
		t.Fatalf("empty list: %v %+v", err, bl.Blkdebug)
	}
}

func TestDecodeResetsTarget(t *testing.T) {
	c := tBlockCommitArgs{Speed: new(int64)}
	if err := Decode(json.RawMessage(`{"device":"d"}`), &c); err != nil || c.Speed != nil {
		t.Fatalf("stale member survived: %v %+v", err, c)
	}
}

func TestDecodeLargeObject(t *testing.T) {
	// More than 8 keys switches the parser to an index map.
	args := `{"driver":"file","filename":"f","node-name":"n","read-only":true,"discard":"unmap",
		"cache":{},"aio-max-batch":3,"x-check-cache-dropped":false,"z1":1,"z2":2}`
	var o tBlockdevOptions
	err := Decode(json.RawMessage(args), &o)
	if err == nil || err.Error() != "Parameter 'z1' is unexpected" {
		t.Fatalf("got %v", err)
	}
	err = Decode(json.RawMessage(`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"a":0}`), &NoArgs{})
	if err == nil || err.Error() != "JSON parse error, duplicate key" {
		t.Fatalf("got %v", err)
	}
}
