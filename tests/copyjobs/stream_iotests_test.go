package copyjobs

import (
	"strings"
	"testing"
)

// Two of the reference's 030 stream cases, run on blockd and compared
// with qemu-storage-daemon (events, then the images after the job):
// TestQuorum streams one quorum child's backing file into it, and
// TestSmallerBackingFile streams a backing file half the size of its
// overlay (the job must end at the end of the image, not hang at the
// end of the backing file).
var streamIotests = []errorJob{
	{
		name: "030_quorum_child", injected: true,
		setup: []string{
			"for i in 0 1 2; do qemu-img create -q -f qcow2 backing$i.qcow2 1M && qemu-io -f qcow2 -c 'write -P 0x55 0 1024' backing$i.qcow2 >/dev/null" +
				" && qemu-img create -q -f qcow2 -b $PWD/backing$i.qcow2 -F qcow2 child$i.qcow2 || exit 1; done",
			`test "$(qemu-io -f qcow2 -r -c map child0.qcow2)" != "$(qemu-io -f qcow2 -r -c map backing0.qcow2)"`,
		},
		start: func(string) [][2]any {
			var children []any
			for _, i := range []string{"0", "1", "2"} {
				children = append(children, qcow2Node("node"+i, "child"+i+".qcow2"))
			}
			return [][2]any{
				{"blockdev-add", map[string]any{"driver": "quorum", "node-name": "quorum0", "vote-threshold": 2, "children": children}},
				{"block-stream", map[string]any{"job-id": "j", "device": "node0"}},
			}
		},
		verify: `test "$(qemu-io -f qcow2 -r -c map child0.qcow2)" = "$(qemu-io -f qcow2 -r -c map backing0.qcow2)"` +
			" && qemu-img compare child0.qcow2 backing0.qcow2 && ! qemu-img info child0.qcow2 | grep -q backing" +
			" && qemu-img info child1.qcow2 | grep -q backing",
	},
	{
		name: "030_smaller_backing_file", injected: true,
		setup: []string{
			"qemu-img create -q -f raw base.raw 1M && qemu-io -f raw -c 'write -P 0x33 0 1M' base.raw >/dev/null",
			"qemu-img create -q -f qcow2 -b $PWD/base.raw -F raw top.qcow2 2M",
		},
		start: func(string) [][2]any {
			return [][2]any{
				{"blockdev-add", qcow2Node("top", "top.qcow2")},
				{"block-stream", map[string]any{"job-id": "j", "device": "top"}},
			}
		},
		verify: "qemu-img compare -f qcow2 -F raw top.qcow2 base.raw && ! qemu-img info top.qcow2 | grep -q backing" +
			" && qemu-io -f qcow2 -r -c 'read -P 0 1M 1M' top.qcow2 | grep -q 'read 1048576'",
	},
}

func TestStreamIotestCases(t *testing.T) {
	for _, job := range streamIotests {
		t.Run(job.name, func(t *testing.T) {
			labels, jobErr, text := runErrorJob(t, blockdBin, job, "report", nil)
			if jobErr != nil || text != "" || !strings.Contains(strings.Join(labels, " "), "BLOCK_JOB_COMPLETED") {
				t.Fatalf("the stream did not complete cleanly: %v %v %q", labels, jobErr, text)
			}
			compareWithReference(t, job, "report", labels, jobErr, text)
		})
	}
}
