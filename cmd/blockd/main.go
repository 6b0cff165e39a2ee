// Command blockd is a storage daemon that speaks QMP like
// qemu-storage-daemon: it takes the same command line for what it
// supports, builds a block graph and runs block jobs on it.
package main

import (
	"fmt"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"blockd/tools"

	// Block drivers register themselves with the graph.
	_ "blockd/drivers/blkdebug"
	_ "blockd/drivers/blkverify"
	_ "blockd/drivers/compress"
	_ "blockd/drivers/copyonread"
	_ "blockd/drivers/file"
	_ "blockd/drivers/luks"
	_ "blockd/drivers/nbd"
	_ "blockd/drivers/null"
	_ "blockd/drivers/preallocate"
	_ "blockd/drivers/qcow2"
	_ "blockd/drivers/quorum"
	_ "blockd/drivers/raw"
	_ "blockd/drivers/rbd"
	_ "blockd/drivers/throttle"
)

// Version is blockd's own version, sent as the greeting's "package".
const Version = "0.1.0"

// The QMP command level blockd follows (the greeting's "qemu" triple).
const (
	qemuMajor = 7
	qemuMinor = 2
	qemuMicro = 0
)

func main() {
	if code, ok := tools.Dispatch(os.Args[1:]); ok { // `blockd img ...`, `blockd io ...`
		os.Exit(code)
	}
	limitMallocArenas()
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cfg, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "blockd: %s\n", err)
		return 1
	}
	for _, w := range cfg.warnings {
		fmt.Fprintf(os.Stderr, "blockd: %s\n", w)
	}
	if cfg.help {
		fmt.Print(usage)
		return 0
	}
	if cfg.version {
		fmt.Printf("blockd version %s (QMP level of QEMU %d.%d.%d)\n", Version, qemuMajor, qemuMinor, qemuMicro)
		return 0
	}
	ready := daemonChild() // set in the child of --daemonize
	if cfg.daemonize && ready == nil {
		return daemonizeParent()
	}
	log, err := newLogger(cfg.logFormat, cfg.logLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "blockd: --log-level %s: %s\n", cfg.logLevel, err)
		return 1
	}
	defer func() { _ = log.Sync() }()
	d := newDaemon(cfg, log)
	if err := d.start(); err != nil {
		fmt.Fprintf(os.Stderr, "blockd: %s\n", err)
		d.shutdown()
		return 1
	}
	if ready != nil {
		if err := detach(ready); err != nil {
			log.Error("--daemonize: detaching failed", zap.Error(err))
		}
	}
	d.wait()
	d.shutdown()
	return 0
}

func newLogger(format, level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	var encoder zapcore.Encoder
	if format == "json" {
		encoder = zapcore.NewJSONEncoder(enc)
	} else {
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		encoder = zapcore.NewConsoleEncoder(enc)
	}
	core := zapcore.NewCore(encoder, zapcore.Lock(os.Stderr), lvl)
	return zap.New(core), nil
}
