package schema

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
)

func ptr[T any](v T) *T { return &v }

func TestMarshalShapes(t *testing.T) {
	cases := []struct {
		name string
		v    any
		want string
	}{
		{"nil", nil, `null`},
		{"no members", NoArgs{}, `{}`},
		{"nil required list", tBlockdevReopenArgs{}, `{"options": []}`},
		{"optional omitted, declaration order", tBlockCommitArgs{Device: "d", Speed: ptr[int64](5), JobID: ptr("j")},
			`{"job-id": "j", "device": "d", "speed": 5}`},
		{"union flattened, base first, alternates as branches",
			tBlockdevOptions{Driver: "qcow2", NodeName: ptr("top"), Qcow2: &tBlockdevOptionsQcow2{
				tBlockdevOptionsGenericCOWFormat: tBlockdevOptionsGenericCOWFormat{
					tBlockdevOptionsGenericFormat: tBlockdevOptionsGenericFormat{File: tBlockdevRef{Definition: &tBlockdevOptions{
						Driver: "file", File: &tBlockdevOptionsFile{Filename: "/img"}}}},
					Backing: &tBlockdevRefOrNull{Null: &Null{}},
				},
				OverlapCheck: &tQcow2OverlapChecks{Mode: ptr[tQcow2OverlapCheckMode]("all")},
			}},
			`{"driver": "qcow2", "node-name": "top", "file": {"driver": "file", "filename": "/img"}, "backing": null, "overlap-check": "all"}`},
		{"variant-less value", tBlockdevOptions{Driver: "vvfat"}, `{"driver": "vvfat"}`},
		{"sized and unsigned", tBlockSetWriteThresholdArgs{NodeName: "n", WriteThreshold: math.MaxUint64},
			`{"node-name": "n", "write-threshold": 18446744073709551615}`},
		{"size, list of uint16", tObjectOptions{QomType: "memory-backend-file", ID: "m",
			MemoryBackendFile: &tMemoryBackendFileProperties{Size: 1 << 40, MemPath: "/x", HostNodes: []uint16{1, 2}}},
			`{"qom-type": "memory-backend-file", "id": "m", "host-nodes": [1, 2], "size": 1099511627776, "mem-path": "/x"}`},
		{"any verbatim, numbers, null", tSizedArgs{A: Any(`{"k":[1,2]}`), N: ptr(0.1), Nul: &Null{}, I8: ptr[int8](-3)},
			`{"i8": -3, "n": 0.10000000000000001, "nul": null, "a": {"k":[1,2]}}`},
		{"list of alternates", []tBlockDirtyBitmapOrStr{{Local: ptr("a")}, {External: &tBlockDirtyBitmap{Node: "n", Name: "b"}}},
			`["a", {"node": "n", "name": "b"}]`},
		{"pointer", &CommandInfo{Name: "quit"}, `{"name": "quit"}`},
		{"nil pointer", (*CommandInfo)(nil), `null`},
	}
	for _, c := range cases {
		b, err := Marshal(c.v)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if string(b) != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, b, c.want)
		}
		if !json.Valid(b) {
			t.Errorf("%s: invalid JSON %s", c.name, b)
		}
	}
}

// QSD: blockdev-add {"driver":"é\u0001\u007f<>&/\ud83d\ude00"} echoes the
// value in its error, written as
// 'Parameter 'driver' does not accept value '\u00E9\u0001\u007F<>&/\uD83D\uDE00”.
func TestAppendJSONStringLikeQEMU(t *testing.T) {
	got := string(AppendJSONString(nil, "é\x01\x7f<>&/😀\"\\\n\t\b\f\r\xff"))
	want := `"\u00E9\u0001\u007F<>&/\uD83D\uDE00\"\\\n\t\b\f\r\uFFFD"`
	if got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	var back string
	if err := json.Unmarshal([]byte(got), &back); err != nil || back != "é\x01\x7f<>&/😀\"\\\n\t\b\f\r\uFFFD" {
		t.Fatalf("does not read back: %v %q", err, back)
	}
}

func TestMarshalErrors(t *testing.T) {
	for name, v := range map[string]any{
		"empty alternate":  tXBlockdevSetIothreadArgs{NodeName: "n"},
		"non-finite":       tSizedArgs{N: ptr(math.Inf(1))},
		"invalid any":      tSizedArgs{A: Any(`{`)},
		"unsupported type": make(chan int),
	} {
		if _, err := Marshal(v); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	values := []any{
		&tBlockdevOptions{Driver: "blkdebug", Discard: ptr[tBlockdevDiscardOptions]("unmap"),
			Blkdebug: &tBlockdevOptionsBlkdebug{Image: tBlockdevRef{Reference: ptr("img")},
				InjectError:    []tBlkdebugInjectErrorOptions{{Event: "l2_load", Errno: ptr[int64](5)}},
				TakeChildPerms: []tBlockPermission{"write", "resize"}}},
		&tBlockdevReopenArgs{Options: []tBlockdevOptions{{Driver: "raw", Raw: &tBlockdevOptionsRaw{
			tBlockdevOptionsGenericFormat: tBlockdevOptionsGenericFormat{File: tBlockdevRef{Reference: ptr("f")}},
			Offset:                        ptr[int64](-1)}}}},
		&tNbdServerStartArgs{Addr: tSocketAddressLegacy{Type: "inet", Inet: &tInetSocketAddressWrapper{
			Data: tInetSocketAddress{Host: "::1", Port: "10809"}}}, MaxConnections: ptr[uint32](4294967295)},
		&tXBlockdevSetIothreadArgs{NodeName: "n", Iothread: tStrOrNull{N: &Null{}}, Force: ptr(true)},
		&tObjectOptions{QomType: "secret_keyring", ID: "s", SecretKeyring: &tSecretKeyringProperties{Serial: math.MinInt32}},
		&tSizedArgs{I16: ptr[int16](-32768), U16: ptr[uint16](65535), N: ptr(-2.5e-300), A: Any(`"x"`),
			M: []tIntOrNumber{{I: ptr[int64](7)}, {F: ptr(0.5)}}},
	}
	for _, v := range values {
		b, err := Marshal(v)
		if err != nil {
			t.Fatalf("%T: %v", v, err)
		}
		back := reflect.New(reflect.TypeOf(v).Elem())
		if err := Decode(b, back.Interface()); err != nil {
			t.Fatalf("%T: decoding %s: %v", v, b, err)
		}
		if !reflect.DeepEqual(back.Interface(), v) {
			t.Errorf("%T: round trip through %s changed the value", v, b)
		}
	}
}

func TestBadDeclarations(t *testing.T) {
	type noPtrOptional struct {
		X int `qapi:"x,optional"`
	}
	type dupMember struct {
		A int `qapi:"a"`
		B int `qapi:"a"`
	}
	type badVariant struct {
		Driver tBlockdevDriver `qapi:"driver,discriminator"`
		X      *CommandInfo    `qapi:",variant=nonesuch"`
	}
	type noDiscriminator struct {
		X *CommandInfo `qapi:",variant=file"`
	}
	type badOption struct {
		X int `qapi:"x,optinal"`
	}
	for _, v := range []any{noPtrOptional{}, dupMember{}, badVariant{}, noDiscriminator{}, badOption{}, struct{ C chan int }{}} {
		_, err := typeOf(reflect.TypeOf(v))
		if v == (struct{ C chan int }{}) {
			// untagged fields are ignored, so this one is fine
			if err != nil {
				t.Errorf("%T: %v", v, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), "schema: ") {
			t.Errorf("%T: want a declaration error, got %v", v, err)
		}
		if err := Decode(json.RawMessage(`{}`), reflect.New(reflect.TypeOf(v)).Interface()); err == nil ||
			!strings.HasPrefix(err.Error(), "internal error") {
			t.Errorf("%T: Decode should report an internal error, got %v", v, err)
		}
	}
}
