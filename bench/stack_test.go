package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/zap"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/drivers/file"
	_ "blockd/drivers/null"
	_ "blockd/drivers/raw"
	"blockd/events"
	"blockd/schema"
)

// imageSize is the image every benchmark uses: 256 MiB, written once with
// data so that reads hit allocated, page-cached blocks (cache.direct=off).
const imageSize = 256 << 20

var (
	imageOnce sync.Once
	imagePath string
	imageErr  error
	imageDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if imageDir != "" {
		_ = os.RemoveAll(imageDir)
	}
	os.Exit(code)
}

// image returns the path of the shared image, creating it on first use.
func image(b *testing.B) string {
	b.Helper()
	imageOnce.Do(func() {
		imageDir, imageErr = os.MkdirTemp("", "blockd-bench-")
		if imageErr != nil {
			return
		}
		imagePath = filepath.Join(imageDir, "disk.img")
		chunk := make([]byte, 1<<20)
		for i := range chunk {
			chunk[i] = byte(i*7 + 1)
		}
		var f *os.File
		if f, imageErr = os.Create(imagePath); imageErr != nil {
			return
		}
		for off := int64(0); off < imageSize && imageErr == nil; off += int64(len(chunk)) {
			_, imageErr = f.WriteAt(chunk, off)
		}
		if err := f.Close(); imageErr == nil {
			imageErr = err
		}
	})
	if imageErr != nil {
		b.Fatal(imageErr)
	}
	return imagePath
}

// bare opens the image with the file driver alone.
func bare(b *testing.B) blockio.Device {
	f, err := file.Open(file.Options{Filename: image(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = f.Close() })
	return f
}

type guest struct{}

func (guest) ParentDesc() string { return "benchmark" }

// stack builds a graph with a raw node on a file node, as
// {"driver": "raw", "file": {"driver": "file", ...}} does, attaches a user
// that reads and writes through it (so the file node holds its image
// locks, as under a guest or a job), and returns the data path of the
// named node: "r" (raw over file) or "f" (the file node alone).
func stack(b *testing.B, name string) blockio.Device {
	reg := schema.NewRegistry()
	g := blockcore.NewGraph(zap.NewNop(), events.NewBus())
	g.RegisterCommands(reg)
	o := blockcore.NewOwner(reg)
	go o.Run()
	for _, args := range []string{
		fmt.Sprintf(`{"driver": "file", "node-name": "f", "filename": %q}`, image(b)),
		`{"driver": "raw", "node-name": "r", "file": "f"}`,
	} {
		if _, err := o.Call(context.Background(), "blockdev-add", json.RawMessage(args)); err != nil {
			b.Fatal(err)
		}
	}
	var (
		n    *blockcore.Node
		user *blockcore.Child
		err  error
	)
	_ = o.Do(func() {
		n = g.Lookup(name)
		user, err = g.AttachUser(guest{}, n, "root",
			blockio.PermConsistentRead|blockio.PermWrite, blockio.PermConsistentRead|blockio.PermWriteUnchanged)
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = o.Do(func() { g.DetachUser(user); g.CloseAll() })
		o.Stop()
	})
	return n.IO()
}

type layer struct {
	name string
	open func(b *testing.B) blockio.Device
}

// layers are the three ways the image is reached.
var layers = []layer{
	{"bare", bare},
	{"filenode", func(b *testing.B) blockio.Device { return stack(b, "f") }},
	{"raw", func(b *testing.B) blockio.Device { return stack(b, "r") }},
}

// rounds rotates the order in which the layers run, one step per
// benchmark call (-count), so that none of them always runs first or
// last, after the others' writes have filled the page cache with dirty
// pages.
var rounds int

func rotated(ls []layer) []layer {
	rounds++
	k := rounds % len(ls)
	return append(append([]layer(nil), ls[k:]...), ls[:k]...)
}

func benchSeq(b *testing.B, write bool) {
	for _, l := range rotated(layers) {
		b.Run(l.name, func(b *testing.B) {
			dev := l.open(b)
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			var off int64
			for b.Loop() {
				var err error
				if write {
					err = dev.WriteAt(buf, off, 0)
				} else {
					err = dev.ReadAt(buf, off)
				}
				if err != nil {
					b.Fatal(err)
				}
				off = (off + int64(len(buf))) % imageSize
			}
		})
	}
}

func benchRand(b *testing.B, write bool) {
	for _, l := range rotated(layers) {
		b.Run(l.name, func(b *testing.B) {
			dev := l.open(b)
			buf := make([]byte, 4096)
			r := rand.New(rand.NewPCG(5, 6))
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				off := r.Int64N(imageSize/4096) * 4096
				var err error
				if write {
					err = dev.WriteAt(buf, off, 0)
				} else {
					err = dev.ReadAt(buf, off)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSeqRead1M(b *testing.B)   { benchSeq(b, false) }
func BenchmarkSeqWrite1M(b *testing.B)  { benchSeq(b, true) }
func BenchmarkRandRead4K(b *testing.B)  { benchRand(b, false) }
func BenchmarkRandWrite4K(b *testing.B) { benchRand(b, true) }

// nullStack builds null-co (read-zeroes) with raw on top and returns the
// driver state of the null-co node (no gate), its data path, or raw's.
func nullStack(b *testing.B, which string) blockio.Device {
	reg := schema.NewRegistry()
	g := blockcore.NewGraph(zap.NewNop(), events.NewBus())
	g.RegisterCommands(reg)
	o := blockcore.NewOwner(reg)
	go o.Run()
	for _, args := range []string{
		`{"driver": "null-co", "node-name": "n", "size": 268435456, "read-zeroes": true}`,
		`{"driver": "raw", "node-name": "r", "file": "n"}`,
	} {
		if _, err := o.Call(context.Background(), "blockdev-add", json.RawMessage(args)); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() {
		_ = o.Do(g.CloseAll)
		o.Stop()
	})
	var dev blockio.Device
	_ = o.Do(func() {
		switch which {
		case "impl":
			dev = g.Lookup("n").Impl()
		case "node":
			dev = g.Lookup("n").IO()
		default:
			dev = g.Lookup("r").IO()
		}
	})
	return dev
}

// BenchmarkLayerCost4K isolates what the graph adds per request, without
// a system call to hide it: 4 KiB reads and writes on null-co through its
// driver state directly, through its node, and through raw on top.
func BenchmarkLayerCost4K(b *testing.B) {
	ls := []layer{
		{"impl", func(b *testing.B) blockio.Device { return nullStack(b, "impl") }},
		{"node", func(b *testing.B) blockio.Device { return nullStack(b, "node") }},
		{"raw", func(b *testing.B) blockio.Device { return nullStack(b, "raw") }},
	}
	for _, op := range []string{"read", "write"} {
		for _, l := range ls {
			b.Run(op+"/"+l.name, func(b *testing.B) {
				dev := l.open(b)
				buf := make([]byte, 4096)
				var off int64
				for b.Loop() {
					var err error
					if op == "write" {
						err = dev.WriteAt(buf, off, 0)
					} else {
						err = dev.ReadAt(buf, off)
					}
					if err != nil {
						b.Fatal(err)
					}
					off = (off + 4096) % imageSize
				}
			})
		}
	}
}
