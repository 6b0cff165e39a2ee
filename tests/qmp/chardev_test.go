package qmptest

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The command line's chardevs are the chardev registry's: the monitor's
// is listed, open and busy; one no monitor uses is opened, listed and
// removable; its socket accepts and goes away with it; and a chardev
// added at run time does not become a monitor (the reference has no
// command for that either).
func TestCommandLineChardevs(t *testing.T) {
	dir := t.TempDir()
	spare := filepath.Join(dir, "spare.sock")
	d := StartDaemon(t, blockdBin, dir, "--chardev", "socket,id=spare,path="+spare+",server=on,wait=off")
	defer d.Stop(t)
	c := Dial(t, d.Sock)
	defer c.Close()
	negotiate(t, c)
	r, _ := c.Command(t, "query-chardev", nil)
	got := map[string]map[string]any{}
	for _, e := range r["return"].([]any) {
		m := e.(map[string]any)
		got[m["label"].(string)] = m
	}
	if m := got["m"]; m == nil || m["frontend-open"] != true || m["filename"] != "unix:"+d.Sock+",server=on" {
		t.Errorf("monitor chardev: %v", got["m"])
	}
	if m := got["spare"]; m == nil || m["frontend-open"] != false || m["filename"] != "disconnected:unix:"+spare+",server=on" {
		t.Errorf("spare chardev: %v", got["spare"])
	}
	if r, _ := c.Command(t, "chardev-remove", map[string]any{"id": "m"}); errDesc(r) != "Chardev 'm' is busy" {
		t.Errorf("removing the monitor's chardev: %v", r)
	}
	conn, err := net.Dial("unix", spare)
	if err != nil {
		t.Fatalf("spare chardev not listening: %v", err)
	}
	conn.Close()
	if r, _ := c.Command(t, "chardev-remove", map[string]any{"id": "spare"}); r["error"] != nil {
		t.Fatalf("chardev-remove spare: %v", r)
	}
	if _, err := os.Stat(spare); !os.IsNotExist(err) {
		t.Errorf("spare socket file left: %v", err)
	}
	// A socket chardev added now accepts a connection but speaks no QMP.
	late := filepath.Join(dir, "late.sock")
	r, _ = c.Command(t, "chardev-add", map[string]any{"id": "late", "backend": map[string]any{"type": "socket",
		"data": map[string]any{"addr": map[string]any{"type": "unix", "data": map[string]any{"path": late}}, "server": true, "wait": false}}})
	if r["error"] != nil {
		t.Fatal(r)
	}
	lc, err := net.Dial("unix", late)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	if _, err := lc.Write([]byte(`{"execute": "qmp_capabilities"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	// The chardev, not a monitor, holds that client, and the monitor
	// still answers meanwhile.
	for i := 0; ; i++ {
		r, _ := c.Command(t, "query-chardev", nil)
		found := ""
		for _, e := range r["return"].([]any) {
			if m := e.(map[string]any); m["label"] == "late" {
				found, _ = m["filename"].(string)
			}
		}
		if found == "unix:"+late+",server=on" {
			break
		}
		if i == 1000 {
			t.Fatalf("late chardev never took its client: %q", found)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func errDesc(r map[string]any) string {
	e, _ := r["error"].(map[string]any)
	d, _ := e["desc"].(string)
	return d
}
