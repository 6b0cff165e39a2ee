"""Copy-job scenarios (stream, mirror, backup) for
../shared/conformance/conform.py, run side by side on qemu-storage-daemon
and blockd:

  python3 ../shared/conformance/conform.py --compare --bin /tmp/blockd tests/conformance/copyjobs.py
"""


def _chain(t, size="16M"):
    t.img("base.qcow2", size=size, writes=["write -P 0x11 0 4M", "write -z 1M 64k"])
    t.img("mid.qcow2", backing="base.qcow2", writes=["write -P 0x22 2M 4M"])
    t.img("top.qcow2", backing="mid.qcow2", writes=["write -P 0x33 6M 1M"])
    t.sh("reference image", ["qemu-img", "convert", "-O", "raw", t.path("top.qcow2"), t.path("expect.raw")])


def _add(t, name, path, **extra):
    t.q("blockdev-add", dict({"driver": "qcow2", "node-name": name,
                              "file": {"driver": "file", "filename": t.path(path)}}, **extra))


def scn_stream_whole_chain(t):
    _chain(t)
    t.start()
    _add(t, "top", "top.qcow2")
    t.q("block-stream", {"job-id": "s", "device": "top"})
    t.job_states("s")
    t.nodes("nodes after")
    t.graph("graph after")
    t.stop()
    t.compare("data preserved", "top.qcow2", "expect.raw")
    t.check("top consistent", "top.qcow2")
    t.backing_of("top has no backing", "top.qcow2")


def scn_stream_to_base_node(t):
    _chain(t)
    t.start()
    _add(t, "top", "top.qcow2")
    t.q("block-stream", {"job-id": "s", "device": "top", "base": t.path("base.qcow2")})
    t.job_states("s")
    t.graph("graph after")
    t.stop()
    t.compare("data preserved", "top.qcow2", "expect.raw")
    t.check("top consistent", "top.qcow2")
    t.backing_of("top backed by base", "top.qcow2")


def scn_mirror_complete(t):
    _chain(t)
    t.img("dst.qcow2", size="16M")
    t.start()
    _add(t, "top", "top.qcow2")
    _add(t, "dst", "dst.qcow2")
    t.q("blockdev-mirror", {"job-id": "m", "device": "top", "target": "dst", "sync": "full"})
    t.ev("BLOCK_JOB_READY", keys=("device", "type", "len", "offset"))
    t.q("query-block-jobs", project=lambda r: [(j["device"], j["type"], j["status"], j["ready"]) for j in r])
    t.q("block-job-complete", {"device": "m"})
    t.job_states("m")
    t.graph("graph after")
    t.stop()
    t.compare("target holds the data", "dst.qcow2", "expect.raw")
    t.check("target consistent", "dst.qcow2")


def scn_mirror_cancel_after_ready(t):
    _chain(t)
    t.img("dst.qcow2", size="16M")
    t.start()
    _add(t, "top", "top.qcow2")
    _add(t, "dst", "dst.qcow2")
    t.q("blockdev-mirror", {"job-id": "m", "device": "top", "target": "dst", "sync": "full"})
    t.ev("BLOCK_JOB_READY", keys=("device", "type"))
    t.q("block-job-cancel", {"device": "m"})
    t.ev("BLOCK_JOB_COMPLETED", keys=("device", "type", "error"))
    t.graph("graph after")
    t.stop()
    t.compare("source unchanged", "top.qcow2", "expect.raw")
    t.compare("target holds the data", "dst.qcow2", "expect.raw")


def scn_backup_full(t):
    _chain(t)
    t.img("dst.qcow2", size="16M")
    t.start()
    _add(t, "top", "top.qcow2")
    _add(t, "dst", "dst.qcow2")
    t.q("blockdev-backup", {"job-id": "b", "device": "top", "target": "dst", "sync": "full"})
    t.job_states("b")
    t.graph("graph after")
    t.stop()
    t.compare("backup holds the data", "dst.qcow2", "expect.raw")
    t.check("backup consistent", "dst.qcow2")
