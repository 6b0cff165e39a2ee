package blkdebug_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"blockd/blockio"
	_ "blockd/drivers/blkdebug"
	"blockd/drivers/file"
	"blockd/drivers/qcow2"
	_ "blockd/drivers/raw"
	"blockd/internal/graphtest"
)

type env struct {
	*graphtest.Env
	dir string
	img string
}

func newEnv(t *testing.T) *env {
	dir := t.TempDir()
	img := filepath.Join(dir, "a.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	return &env{graphtest.New(t), dir, img}
}

// add runs blockdev-add and returns the data path of the new node.
func (e *env) add(t *testing.T, args string) blockio.Device {
	t.Helper()
	var o struct {
		NodeName string `json:"node-name"`
	}
	_ = json.Unmarshal([]byte(args), &o)
	e.Must(t, "blockdev-add", args)
	return e.IO(t, o.NodeName)
}

func (e *env) image() string { return `{"driver": "file", "filename": "` + e.img + `"}` }

func wantErrno(t *testing.T, what string, err error, errno syscall.Errno) {
	t.Helper()
	if errno == 0 && err != nil || errno != 0 && !errors.Is(err, errno) {
		t.Fatalf("%s: got %v, want %v", what, err, errno)
	}
}

// An inject-error rule armed by read_aio fails reads covering its sector
// (and only those), once if asked.
func TestInjectOnSectorOnce(t *testing.T) {
	e := newEnv(t)
	d := e.add(t, `{"driver": "raw", "node-name": "r", "file": {"driver": "blkdebug", "image": `+e.image()+`,
		"inject-error": [{"event": "read_aio", "sector": 8, "errno": 28, "once": true}]}}`)
	buf := make([]byte, 4096)
	wantErrno(t, "read before the sector", d.ReadAt(buf, 0), 0)
	wantErrno(t, "read of the sector", d.ReadAt(buf, 4096), syscall.ENOSPC)
	wantErrno(t, "second read (once)", d.ReadAt(buf, 4096), 0)
	wantErrno(t, "a write is not armed by read_aio", d.WriteAt(buf, 4096, 0), 0)
}

// set-state moves the node through states; a rule bound to a state only
// arms in it. The default iotype set leaves block-status alone, and
// included; an armed rule stays armed until another event arms rules.
func TestStatesAndIOTypes(t *testing.T) {
	e := newEnv(t)
	d := e.add(t, `{"driver": "blkdebug", "node-name": "d", "image": `+e.image()+`,
		"inject-error": [{"event": "read_aio", "state": 2, "iotype": "read"}, {"event": "flush_to_disk", "state": 3, "iotype": "flush", "errno": 1}],
		"set-state": [{"event": "write_aio", "state": 1, "new_state": 2}, {"event": "pwritev_zero", "new_state": 3}]}`)
	buf := make([]byte, 512)
	wantErrno(t, "read in state 1", d.ReadAt(buf, 0), 0)
	wantErrno(t, "write (state 1 -> 2)", d.WriteAt(buf, 0, 0), 0)
	wantErrno(t, "read in state 2", d.ReadAt(buf, 0), syscall.EIO)
	wantErrno(t, "read in state 2 again (not once)", d.ReadAt(buf, 512), syscall.EIO)
	if _, err := d.BlockStatus(0, 512); err != nil {
		t.Fatalf("block-status is not in the default iotypes: %v", err)
	}
	wantErrno(t, "zero write (state -> 3)", d.WriteZeroes(0, 512, 0), 0)
	wantErrno(t, "flush in state 3", d.Flush(), syscall.EPERM)
}

// Rules from a config file; align makes the node read whole blocks, so a
// small read beside the sector fails; max-transfer cuts requests.
func TestConfigFileAndAlign(t *testing.T) {
	e := newEnv(t)
	conf := filepath.Join(e.dir, "rules.conf")
	if err := os.WriteFile(conf, []byte("# c\n[inject-error]\nevent = \"read_aio\"\nsector = \"9\"\nerrno = \"5\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := e.add(t, `{"driver": "blkdebug", "node-name": "d", "config": "`+conf+`", "align": 4096, "max-transfer": 8192, "image": `+e.image()+`}`)
	buf := make([]byte, 100)
	wantErrno(t, "read in another block", d.ReadAt(buf, 8192), 0)
	wantErrno(t, "read of sector 8 within the aligned block of sector 9", d.ReadAt(buf, 4096), syscall.EIO)
	big := make([]byte, 64<<10)
	wantErrno(t, "a long read reaching the sector", d.ReadAt(big, 0), syscall.EIO)
	// Unaligned writes read, merge and write whole blocks: data around
	// them survives.
	if err := d.WriteAt([]byte("hello"), 8200, 0); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(e.img)
	if string(raw[8200:8205]) != "hello" || raw[8199] != 0 || raw[8205] != 0 {
		t.Fatalf("unaligned write: %q", raw[8195:8210])
	}
}

// A qcow2 node above raises its metadata events on blkdebug: l2_load
// arms a rule that fails the L2 table's read, so the guest read needing
// it fails with the errno; once used up, the read loads the table. A
// set-state rule on cluster_alloc moves the state when a write allocates.
func TestQcow2MetadataEvents(t *testing.T) {
	e := newEnv(t)
	img := filepath.Join(e.dir, "a.qcow2")
	if err := file.Create(file.CreateOptions{Filename: img}); err != nil {
		t.Fatal(err)
	}
	f, err := file.Open(file.Options{Filename: img})
	if err != nil {
		t.Fatal(err)
	}
	if err := qcow2.Create(f, qcow2.CreateOptions{Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	q, err := qcow2.Open(f, qcow2.OpenOptions{})
	if err == nil {
		err = q.WriteAt(make([]byte, 4096), 0, 0)
	}
	if err == nil {
		err = q.Close()
	}
	_ = f.Close()
	if err != nil {
		t.Fatal(err)
	}
	d := e.add(t, `{"driver": "qcow2", "node-name": "q", "file": {"driver": "blkdebug", "node-name": "dbg",
		"image": {"driver": "file", "filename": "`+img+`"},
		"inject-error": [{"event": "l2_load", "errno": 28, "once": true}, {"event": "l2_update", "state": 2, "iotype": "flush", "errno": 1}],
		"set-state": [{"event": "cluster_alloc", "new_state": 2}]}}`)
	buf := make([]byte, 512)
	wantErrno(t, "read loading the L2 table", d.ReadAt(buf, 0), syscall.ENOSPC)
	wantErrno(t, "the same read (once)", d.ReadAt(buf, 0), 0)
	wantErrno(t, "a read with the table cached", d.ReadAt(buf, 512), 0)
	// Allocating moves to state 2; the flush writes the L2 table back,
	// whose l2_update arms the flush rule, and the flush of the file
	// that follows fails.
	wantErrno(t, "write allocating a cluster", d.WriteAt(buf, 64<<10, 0), 0)
	wantErrno(t, "flush after l2_update in state 2", d.Flush(), syscall.EPERM)
}
