package qmp

import (
	"testing"

	"blockd/schema"
)

func TestQemuSpacing(t *testing.T) {
	in := `{"return":{"a":[1,2],"s":"x, y: z \" ,"},"id":{"k":null}}`
	want := `{"return": {"a": [1, 2], "s": "x, y: z \" ,"}, "id": {"k": null}}`
	if got := string(qemuSpacing([]byte(in))); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// QEMU puts "return" before "id" and "id" before "error"; scripts that
// match text rely on it.
func TestReplyMemberOrder(t *testing.T) {
	if got := string(reply([]byte(`{}`), nil, []byte(`7`))); got != `{"return":{},"id":7}` {
		t.Fatalf("success reply %s", got)
	}
	got := string(reply(nil, schema.Errorf("bad"), []byte(`"x"`)))
	if got != `{"id":"x","error":{"class":"GenericError","desc":"bad"}}` {
		t.Fatalf("error reply %s", got)
	}
}
