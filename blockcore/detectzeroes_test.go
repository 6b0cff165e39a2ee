package blockcore_test

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/drivers/file"
	"blockd/drivers/qcow2"
	"blockd/events"
	"blockd/schema"
)

// detect-zeroes turns a write of zeroes into a zero write (a qcow2 zero
// cluster, no data), as QEMU's bdrv_aligned_pwritev does; off writes data.
func TestDetectZeroes(t *testing.T) {
	for _, mode := range []schema.BlockdevDetectZeroesOptions{"off", "on", "unmap"} {
		t.Run(string(mode), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "a.qcow2")
			if err := os.WriteFile(path, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := file.Open(file.Options{Filename: path})
			if err != nil {
				t.Fatal(err)
			}
			if err := qcow2.Create(f, qcow2.CreateOptions{Size: 1 << 20}); err != nil {
				t.Fatal(err)
			}
			f.Close()
			g := blockcore.NewGraph(zap.NewNop(), events.NewBus())
			name := "q"
			opts := &schema.BlockdevOptions{Driver: "qcow2", NodeName: &name, DetectZeroes: &mode,
				Qcow2: &schema.BlockdevOptionsQcow2{}}
			if mode == "unmap" {
				unmap := schema.BlockdevDiscardOptions("unmap")
				opts.Discard = &unmap
			}
			opts.Qcow2.File = schema.BlockdevRef{Definition: &schema.BlockdevOptions{Driver: "file",
				File: &schema.BlockdevOptionsFile{Filename: path}}}
			if err := g.Add(opts); err != nil {
				t.Fatal(err)
			}
			defer g.CloseAll()
			io := g.Lookup("q").IO()
			if err := io.WriteAt(make([]byte, 65536), 0, 0); err != nil {
				t.Fatal(err)
			}
			st, err := io.BlockStatus(0, 65536)
			if err != nil {
				t.Fatal(err)
			}
			isData := st.Flags&blockio.StatusData != 0
			if wantData := mode == "off"; isData != wantData {
				t.Fatalf("detect-zeroes=%s: status %#x after writing zeroes", mode, st.Flags)
			}
			if mode != "off" && st.Flags&blockio.StatusZero == 0 {
				t.Fatalf("detect-zeroes=%s: not a zero cluster (%#x)", mode, st.Flags)
			}
		})
	}
}
