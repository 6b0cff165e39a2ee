package rbdtest

import (
	"path/filepath"
	"testing"

	qmptest "blockd/tests/qmp"
)

// TestTranscripts replays testdata/*.qmp, recorded from
// qemu-storage-daemon against the same kind of cluster (tests/ceph); the
// transcripts copy $BLOCKD_CEPH_CONF into their directory.
func TestTranscripts(t *testing.T) {
	needCluster(t)
	files, err := filepath.Glob("testdata/*.qmp")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts found: %v", err)
	}
	for _, f := range files {
		tr, err := qmptest.Parse(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(filepath.Base(f), func(t *testing.T) { qmptest.Run(t, blockdBin, tr) })
	}
}
