package wire

import (
	"encoding/json"
	"testing"
)

// The texts are qemu-storage-daemon 7.2's answers to the same input
// (recorded by hand with tests/qmp/record.py-style runs), except "number
// out of range", where the reference writes "inf" (not JSON).
func TestCheck(t *testing.T) {
	cases := []struct {
		in, want string
	}{
		{`{"execute":"query-version","id":1}`, ""},
		{`{"execute":"query-version","execute":"quit"}`, "JSON parse error, duplicate key"},
		{`{"execute":"query-version","id":1,"id":2}`, "JSON parse error, duplicate key"},
		{`{"arguments":{"a":{"b":1,"b":1}}}`, "JSON parse error, duplicate key"},
		{`{"a":"x","\u0061":"y"}`, "JSON parse error, duplicate key"},
		{`[{"a":1},{"a":1}]`, ""},
		{"{\"id\":\"\xff\xfe\"}", "JSON parse error, invalid UTF-8 sequence in string"},
		{"{\"id\":\"\xc0\xaf\"}", "JSON parse error, invalid UTF-8 sequence in string"},
		{"{\"id\":\"\xe0\x80\xaf\"}", "JSON parse error, invalid UTF-8 sequence in string"},
		{"{\"id\":\"\xed\xa0\x80\"}", "JSON parse error, invalid UTF-8 sequence in string"},
		{"{\"id\":\"\xf4\x90\x80\x80\"}", "JSON parse error, invalid UTF-8 sequence in string"},
		{"{\"id\":\"\xef\xbf\xbf\"}", "JSON parse error, invalid UTF-8 sequence in string"},
		{"{\"id\":\"\xc3\"}", "JSON parse error, invalid UTF-8 sequence in string"},
		{"{\"a\xc3\":1}", "JSON parse error, invalid UTF-8 sequence in string"},
		{"{\"id\":[1,{\"a\":\"\xc3\"}]}", "JSON parse error, invalid UTF-8 sequence in string"},
		{"{\"id\":\"\xf0\x9f\x98\x80\xc3\xa9\x7f\"}", ""},
		{`{"id":"\ud800"}`, `JSON parse error, \ud800 is not a valid Unicode character`},
		{`{"id":"\udc00x"}`, `JSON parse error, \udc00 is not a valid Unicode character`},
		{`{"id":"\ud83d"}`, `JSON parse error, \ud83d is not a valid Unicode character`},
		{`{"id":"\ud83d\u0041"}`, `JSON parse error, \ud83d is not a valid Unicode character`},
		{`{"id":"\uFFFF"}`, `JSON parse error, \uFFFF is not a valid Unicode character`},
		{`{"id":"\uFFFE"}`, `JSON parse error, \uFFFE is not a valid Unicode character`},
		{`{"id":"\ud83d\ude00\u0000\u00e9"}`, ""},
		{`{"id":1e400}`, "JSON parse error, number out of range"},
		{`{"id":-1e400}`, "JSON parse error, number out of range"},
		{`{"id":[1e308, 123456789012345678901234567890, 18446744073709551616, 1e-400]}`, ""},
		{`{"a":true,"b":false,"c":null,"d":[],"e":{}}`, ""},
	}
	for _, c := range cases {
		if !json.Valid([]byte(c.in)) {
			t.Fatalf("test input %q is not valid JSON", c.in)
		}
		if got := Check([]byte(c.in)); got != c.want {
			t.Errorf("Check(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
