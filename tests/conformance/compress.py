"""Compress filter scenarios for ../shared/conformance/conform.py, run side
by side on qemu-storage-daemon and blockd:

  python3 ../shared/conformance/conform.py --compare --bin /tmp/blockd tests/conformance/compress.py
"""


def scn_compress_filter(t):
    t.img("c.qcow2", size="4M")
    t.start()
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "q",
                         "file": {"driver": "file", "node-name": "f", "filename": t.path("c.qcow2")}})
    t.q("blockdev-add", {"driver": "compress", "node-name": "bad", "file": "f"}, label="compress over a file node")
    t.q("blockdev-add", {"driver": "compress", "node-name": "c", "file": "q"})
    t.q("blockdev-add", {"driver": "compress", "node-name": "c2", "file": "q", "nope": 1}, label="unknown option")
    t.nodes("nodes")
    t.graph("graph")
    t.q("nbd-server-start", {"addr": {"type": "unix", "data": {"path": t.path("nbd.sock")}}})
    t.q("block-export-add", {"type": "nbd", "id": "e", "node-name": "c", "writable": True})
    uri = "nbd+unix:///c?socket=" + t.path("nbd.sock")
    t.sh("whole clusters", ["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 128k", uri])
    t.sh("partial cluster", ["qemu-io", "-f", "raw", "-c", "write -P 0x22 200k 1000", uri])
    t.sh("rewrite refused", ["qemu-io", "-f", "raw", "-c", "write -P 0x33 0 64k", uri], keep=("rc", "out"))
    t.sh("read back", ["qemu-io", "-f", "raw", "-c", "read -P 0x11 0 128k", "-c", "read -P 0x22 200k 1000", uri])
    t.q("block-export-del", {"id": "e"})
    t.ev("BLOCK_EXPORT_DELETED")
    t.q("blockdev-del", {"node-name": "c"})
    t.q("blockdev-del", {"node-name": "q"})
    t.stop()
    t.check("image consistent", "c.qcow2")
    t.sh("compressed clusters", ["qemu-img", "check", t.path("c.qcow2")], keep=("rc", "out"))


def scn_compressed_backup(t):
    t.img("src.qcow2", size="4M", writes=["write -P 0x41 0 3M"])
    t.img("dst.qcow2", size="4M")
    t.start()
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "src",
                         "file": {"driver": "file", "filename": t.path("src.qcow2")}})
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "dst",
                         "file": {"driver": "file", "node-name": "dst-file", "filename": t.path("dst.qcow2")}})
    t.q("blockdev-backup", {"job-id": "b0", "device": "src", "target": "dst-file", "sync": "full", "compress": True},
        label="compressed backup to a file node")
    t.q("blockdev-backup", {"job-id": "b", "device": "src", "target": "dst", "sync": "full", "compress": True})
    t.job_states("b", final=("concluded", "null"))
    t.q("blockdev-del", {"node-name": "dst"})
    t.q("blockdev-del", {"node-name": "src"})
    t.stop()
    t.compare("backup equals source", "src.qcow2", "dst.qcow2")
    t.sh("compressed clusters", ["qemu-img", "check", t.path("dst.qcow2")], keep=("rc", "out"))
