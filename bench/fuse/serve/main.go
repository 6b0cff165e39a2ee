// Command serve exports one image through blockd's FUSE export until
// SIGTERM or SIGINT, for bench/fuse/run.sh: the file driver and the qcow2
// engine are used directly (no daemon, no graph), which is what the
// daemon's export runs on below its node's gate.
//
//	serve -f qcow2 -o mountpoint [-w] image
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"blockd/blockio"
	"blockd/drivers/file"
	"blockd/drivers/qcow2"
	"blockd/exports/fuse"
)

func main() {
	format := flag.String("f", "qcow2", "image format: qcow2 or raw")
	mp := flag.String("o", "", "mountpoint (an existing regular file)")
	writable := flag.Bool("w", false, "writable export")
	flag.Parse()
	if flag.NArg() != 1 || *mp == "" {
		fmt.Fprintln(os.Stderr, "usage: serve [-f qcow2|raw] [-w] -o mountpoint image")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *format, *mp, *writable); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}

func run(image, format, mp string, writable bool) error {
	f, err := file.Open(file.Options{Filename: image, ReadOnly: !writable, DiscardUnmap: true})
	if err != nil {
		return err
	}
	defer f.Close()
	var dev blockio.Device = f
	if format == "qcow2" {
		img, err := qcow2.Open(f, qcow2.OpenOptions{ReadOnly: !writable})
		if err != nil {
			return err
		}
		defer img.Close()
		dev = img
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	e, err := fuse.Mount(dev, fuse.Options{Mountpoint: mp, Writable: writable})
	if err != nil {
		return err
	}
	fmt.Println("ready")
	<-sigs
	return e.Unmount()
}
