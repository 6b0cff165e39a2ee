package qmp

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// split runs the splitter over input and returns messages and limit errors
// in order ("!" prefix for errors).
func split(t *testing.T, input string, max int) []string {
	t.Helper()
	sp := newSplitter(strings.NewReader(input), max)
	var out []string
	for {
		msg, lerr, err := sp.next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if lerr != "" {
			out = append(out, "!"+lerr)
		} else if msg != nil {
			out = append(out, string(msg))
		}
	}
}

func TestSplitterFraming(t *testing.T) {
	cases := []struct {
		name, in string
		want     []string
	}{
		{"one per line", "{\"a\":1}\n{\"b\":2}\n", []string{`{"a":1}`, `{"b":2}`}},
		{"two on a line", `{"a":1}{"b":2} {"c":3}`, []string{`{"a":1}`, `{"b":2}`, `{"c":3}`}},
		{"across lines", "{\"a\":\n 1\n}", []string{"{\"a\":\n 1\n}"}},
		{"braces in strings", `{"a":"}{]["}`, []string{`{"a":"}{]["}`}},
		{"escaped quote", `{"a":"x\"}"}`, []string{`{"a":"x\"}"}`}},
		{"single quotes", `{'a':'it\'s "q"'}`, []string{`{"a":"it's \"q\""}`}},
		{"top-level scalars", "42 \"s\" null true\n", []string{"42", `"s"`, "null", "true"}},
		{"scalar then object", `7{"a":1}`, []string{"7", `{"a":1}`}},
		{"stray closer", `]{"a":1}`, []string{"]", `{"a":1}`}},
		{"mismatched closer", `{"a" ]{"b":1}`, []string{`{"a" ]`, `{"b":1}`}},
		{"whitespace only", " \n\t\r\n", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := split(t, c.in, 0)
			if strings.Join(got, "|") != strings.Join(c.want, "|") {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestSplitterLimitsResynchronize(t *testing.T) {
	big := `{"id":"` + strings.Repeat("x", 5000) + `"}`
	got := split(t, big+`{"ok":1}`, 1000)
	want := []string{"!JSON token size limit exceeded", `{"ok":1}`}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("oversized: got %q, want %q", got, want)
	}
	deep := strings.Repeat("[", MaxNesting+50) + strings.Repeat("]", MaxNesting+50)
	got = split(t, deep+`{"ok":2}`, 0)
	want = []string{"!JSON nesting depth limit exceeded", `{"ok":2}`}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("deep: got %q, want %q", got, want)
	}
}

// TestSplitterBoundedMemory feeds a huge message and checks the buffer
// never grows past the limit.
func TestSplitterBoundedMemory(t *testing.T) {
	const limit = 64 << 10
	r := io.MultiReader(strings.NewReader(`{"id":[`), &repeatReader{b: []byte("1,"), n: 8 << 20},
		strings.NewReader(`1]}{"ok":1}`))
	sp := newSplitter(r, limit)
	var msgs []string
	for {
		msg, lerr, err := sp.next()
		if cap(sp.buf) > 2*limit+64 {
			t.Fatalf("buffer grew to %d bytes", cap(sp.buf))
		}
		if err != nil {
			break
		}
		if lerr != "" {
			msgs = append(msgs, "!"+lerr)
		} else if msg != nil {
			msgs = append(msgs, string(msg))
		}
	}
	if len(msgs) != 2 || msgs[1] != `{"ok":1}` {
		t.Fatalf("got %q", msgs)
	}
}

type repeatReader struct {
	b []byte
	n int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	k := 0
	for k+len(r.b) <= len(p) && r.n > 0 {
		copy(p[k:], r.b)
		k += len(r.b)
		r.n--
	}
	return k, nil
}

func FuzzSplitter(f *testing.F) {
	f.Add([]byte(`{"execute":"x"}{'a':"b"}[1,2]` + "\n42"))
	f.Add([]byte(`{"a":"\\\"}"}]]]`))
	f.Fuzz(func(t *testing.T, in []byte) {
		sp := newSplitter(bytes.NewReader(in), 256)
		for i := 0; i < len(in)+2; i++ {
			if _, _, err := sp.next(); err != nil {
				return
			}
		}
		t.Fatalf("splitter returned more messages than input bytes")
	})
}
