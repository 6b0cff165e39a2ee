package schema

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// tFuzzArgs reaches every decoder path: unions, alternates (with null,
// enum, integer and number branches), lists of lists, every integer
// width, sizes, numbers, 'any' both raw and as Go values, and recursion
// through BlockdevRef.
type tFuzzArgs struct {
	Opts    *tBlockdevOptions        `qapi:"opts,optional"`
	List    []tBlockdevOptions       `qapi:"list,optional"`
	Obj     *tObjectOptions          `qapi:"obj,optional"`
	Nbd     *tNbdServerStartArgs     `qapi:"nbd,optional"`
	Sized   *tSizedArgs              `qapi:"sized,optional"`
	Ref     *tBlockdevRefOrNull      `qapi:"ref,optional"`
	Bitmaps []tBlockDirtyBitmapOrStr `qapi:"bitmaps,optional"`
	U64     *uint64                  `qapi:"u64,optional"`
	Size    *Size                    `qapi:"size,optional"`
	Int     *int                     `qapi:"int,optional"`
	Str     *string                  `qapi:"str,optional"`
	Bool    *bool                    `qapi:"bool,optional"`
	Map     map[string]any           `qapi:"map,optional"`
	Iface   any                      `qapi:"iface,optional"`
	Nested  [][]int32                `qapi:"nested,optional"`
}

func fuzzSeeds() []string {
	seeds := []string{
		``, `{}`, `null`, `[]`, `"x"`, `{"a":1,"a":2}`,
		`{"opts":{"driver":"qcow2","file":{"driver":"file","filename":"/x"},"backing":null,"overlap-check":{"template":"all"}}}`,
		`{"list":[{"driver":"raw","file":"f","offset":-1}],"nested":[[1,-2147483648],[]],"u64":-1,"size":18446744073709551615}`,
		`{"sized":{"n":1e400,"m":[1,2.5,-0.0],"a":{"deep":[{"x":null}]},"nul":null},"map":{"k":[1,"é"]},"iface":1.5}`,
		`{"ref":"node","bitmaps":["a",{"node":"n","name":"b"}],"str":"\ud83d\ude00\u0000","bool":false,"int":-9223372036854775808}`,
		`{"obj":{"qom-type":"memory-backend-file","id":"m","size":1,"mem-path":"/p","host-nodes":[65535]}}`,
		`{"nbd":{"addr":{"type":"unix","data":{"path":"/s"}},"max-connections":4294967295}}`,
		`{"opts":{"driver":"blkdebug","image":{"driver":"blkdebug","image":{"driver":"raw","file":"f"}},` +
			`"inject-error":[{"event":"l2_load","errno":5}],"take-child-perms":["write"]}}`,
	}
	for _, table := range [][]decodeCase{keyvalBlockdevCases, keyvalObjectCases, blockdevAddCases, blockdevReopenCases, blockCommitCases,
		bitmapAddCases, writeThresholdCases, bitmapMergeCases, setIothreadCases, objectAddCases,
		nbdServerStartCases, noArgsCases, sourceDerivedCases} {
		for _, c := range table {
			seeds = append(seeds, c.args, `{"opts":`+c.args+`}`, `{"list":[`+c.args+`]}`, `{"sized":`+c.args+`}`)
		}
	}
	return seeds
}

// FuzzDecode checks that Decode and DecodeKeyval never panic, that every failure is a
// GenericError, and that whatever it accepts encodes and decodes again
// stably (after one round, since 1.0 may come back as the integer 1).
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Keyval decoding only has to fail cleanly.
		if err := DecodeKeyval(data, new(tFuzzArgs)); err != nil {
			var qe *Error
			if !errors.As(err, &qe) || qe.Class != ClassGeneric || qe.Desc == "" {
				t.Fatalf("bad keyval error %#v", err)
			}
		}
		for _, target := range []func() any{
			func() any { return new(tFuzzArgs) },
			func() any { return new(tBlockdevOptions) },
			func() any { return new(NoArgs) },
		} {
			v := target()
			err := Decode(data, v)
			if err != nil {
				var qe *Error
				if !errors.As(err, &qe) || qe.Class != ClassGeneric || qe.Desc == "" {
					t.Fatalf("bad error %#v", err)
				}
				continue
			}
			b1, err := Marshal(v)
			if err != nil {
				if strings.Contains(err.Error(), "non-finite") {
					continue // 1e400 decodes to +Inf, as in QEMU, and cannot be written
				}
				t.Fatalf("Marshal after Decode(%q): %v", data, err)
			}
			v2 := target()
			if err := Decode(b1, v2); err != nil {
				t.Fatalf("re-decoding %s: %v", b1, err)
			}
			b2, err := Marshal(v2)
			if err != nil {
				t.Fatalf("Marshal %s: %v", b1, err)
			}
			v3 := target()
			if err := Decode(b2, v3); err != nil {
				t.Fatalf("re-decoding %s: %v", b2, err)
			}
			b3, _ := Marshal(v3)
			if string(b2) != string(b3) || !json.Valid(b3) {
				t.Fatalf("unstable encoding:\n%s\n%s", b2, b3)
			}
		}
	})
}
