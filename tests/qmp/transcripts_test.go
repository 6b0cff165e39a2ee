package qmptest

import (
	"path/filepath"
	"testing"
)

var blockdBin string

func TestMain(m *testing.M) { RunWithBlockd(m, &blockdBin) }

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
