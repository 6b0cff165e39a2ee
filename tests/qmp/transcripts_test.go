package qmptest

import (
	"flag"
	"path/filepath"
	"testing"
)

var blockdBin string

// transcriptsAtOnce is how many transcripts replay at the same time
// unless -test.parallel says otherwise: they spend most of their time
// waiting on jobs' rate limits and timers, not on the CPU, so running
// only GOMAXPROCS of them (the default) left the machine idle.
const transcriptsAtOnce = "8"

func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", transcriptsAtOnce)
	}
	RunWithBlockd(m, &blockdBin)
}

// TestTranscripts replays every testdata/*.qmp against a fresh blockd.
func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.qmp")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts found: %v", err)
	}
	for _, f := range files {
		tr, err := Parse(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			Run(t, blockdBin, tr)
		})
	}
}
