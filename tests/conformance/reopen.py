"""blockdev-reopen scenarios for ../shared/conformance/conform.py, run side
by side on qemu-storage-daemon and blockd:

  go build -o /tmp/blockd-reopen ./cmd/blockd
  python3 /work/shared/conformance/conform.py --compare --bin /tmp/blockd-reopen tests/conformance/reopen.py

scn_x_blockdev_reopen differs by design: qemu-storage-daemon 7.2 no longer
has the QEMU 4.0-6.0 command, blockd keeps it (docs/commands.md).
"""
import subprocess
import time


def _qcow2(t, name, img, **extra):
    o = {"driver": "qcow2", "node-name": name,
         "file": {"driver": "file", "node-name": name + "-file", "filename": t.path(img)}}
    o.update(extra)
    return o


def _reopen(t, *opts, label=None):
    return t.q("blockdev-reopen", {"options": list(opts)}, label=label)


def _cache_modes(nodes):
    return sorted((n["node-name"], n["cache"]["direct"], n["cache"]["no-flush"], n["detect_zeroes"])
                  for n in nodes if not n["node-name"].startswith("#"))


def _qemu_io(t, label, *args):
    t.sh(label, ["qemu-io"] + list(args), keep=("rc",))


def scn_reopen_read_only_interop(t):
    t.img("a.qcow2", size="16M", writes=["write -P 0x11 0 1M"])
    img = t.path("a.qcow2")
    t.start()
    t.q("blockdev-add", _qcow2(t, "q", "a.qcow2"))
    _qemu_io(t, "reader refused while writable", "-r", "-c", "read -P 0x11 0 1M", img)
    _reopen(t, _qcow2(t, "q", "a.qcow2", **{"read-only": True}), label="to read-only")
    t.nodes("nodes read-only")
    t.graph("graph read-only")
    _qemu_io(t, "reader beside the daemon", "-r", "-c", "read -P 0x11 0 1M", img)
    _qemu_io(t, "writer still refused", "-c", "write -P 0x22 0 4k", img)
    _reopen(t, _qcow2(t, "q", "a.qcow2"), label="back to read-write")
    t.nodes("nodes read-write")
    _qemu_io(t, "reader refused again", "-r", "-c", "read 0 4k", img)
    t.stop()
    t.check("image consistent", "a.qcow2")


def scn_reopen_lock_conflict(t):
    t.img("a.qcow2", size="16M")
    img = t.path("a.qcow2")
    t.start()
    t.q("blockdev-add", _qcow2(t, "q", "a.qcow2", **{"read-only": True}))
    holder = subprocess.Popen(["qemu-io", "-r", img], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        _reopen(t, _qcow2(t, "q", "a.qcow2"), label="read-write while another reads")
        t.nodes("nodes unchanged")
        t.graph("graph unchanged")
        _qemu_io(t, "a second reader still gets in", "-r", "-c", "read 0 4k", img)
    finally:
        holder.communicate(b"quit\n", timeout=10)
    _reopen(t, _qcow2(t, "q", "a.qcow2"), label="read-write once the reader quit")
    t.nodes("nodes read-write")


def scn_reopen_options_and_errors(t):
    t.img("a.qcow2", size="16M")
    t.start()
    t.q("blockdev-add", _qcow2(t, "q", "a.qcow2", **{"cache-size": 1048576}))
    t.q("blockdev-add", {"driver": "raw", "node-name": "fs", "read-only": True, "force-share": True,
                         "file": {"driver": "file", "filename": t.path("a.qcow2")}})
    _reopen(t, _qcow2(t, "q", "a.qcow2", cache={"direct": True, "no-flush": True},
                      **{"detect-zeroes": "on", "lazy-refcounts": True}), label="cache, detect-zeroes, lazy")
    t.q("query-named-block-nodes", {"flat": True}, label="cache shown",
        project=_cache_modes)
    _reopen(t, _qcow2(t, "q", "a.qcow2"), label="all back to defaults")
    t.q("query-named-block-nodes", {"flat": True}, label="defaults shown",
        project=_cache_modes)
    _reopen(t, {"node-name": "q", "driver": "raw", "file": "q-file"}, label="driver")
    _reopen(t, _qcow2(t, "q", "b.qcow2"), label="filename of the file")
    _reopen(t, {"driver": "qcow2", "file": "q-file"}, label="no node-name")
    _reopen(t, {"driver": "qcow2", "node-name": "nope", "file": "q-file"}, label="unknown node")
    _reopen(t, _qcow2(t, "q", "a.qcow2", **{"l2-cache-entry-size": 1000}), label="bad entry size")
    _reopen(t, _qcow2(t, "q", "a.qcow2", **{"cache-size": 1, "l2-cache-size": 2, "refcount-cache-size": 3}),
            label="three cache sizes")
    _reopen(t, _qcow2(t, "q", "a.qcow2", **{"data-file": "q-file"}), label="data-file")
    _reopen(t, {"driver": "raw", "node-name": "fs", "read-only": True,
                "file": {"driver": "file", "filename": t.path("a.qcow2")}}, label="force-share left out")
    _reopen(t, {"driver": "raw", "node-name": "fs", "read-only": True, "force-share": True,
                "file": {"driver": "file", "filename": t.path("a.qcow2")}}, label="force-share repeated")
    _reopen(t, {"driver": "raw", "node-name": "fs", "read-only": True, "discard": "ignore", "detect-zeroes": "unmap",
                "file": {"driver": "file", "filename": t.path("a.qcow2")}}, label="detect-zeroes unmap")
    t.nodes("nodes at the end")
    t.stop()
    t.check("image consistent", "a.qcow2")


def scn_reopen_atomic(t):
    t.img("a.qcow2", size="16M")
    t.img("b.qcow2", size="16M")
    t.start()
    t.q("blockdev-add", _qcow2(t, "qa", "a.qcow2"))
    t.q("blockdev-add", {"driver": "file", "node-name": "fb", "filename": t.path("b.qcow2")})
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "qb", "file": "fb"})
    t.graph("graph before")
    first = _qcow2(t, "qa", "a.qcow2", **{"read-only": True})
    _reopen(t, first, {"driver": "file", "node-name": "fb", "filename": t.path("b.qcow2"), "read-only": True},
            label="second refused by permissions")
    t.nodes("nodes unchanged")
    t.graph("graph unchanged")
    _qemu_io(t, "first still holds its write lock", "-r", "-c", "read 0 4k", t.path("a.qcow2"))
    _reopen(t, first, {"driver": "file", "node-name": "fb", "filename": t.path("a.qcow2")},
            label="second refused while prepared")
    t.nodes("nodes still unchanged")
    _reopen(t, first, {"driver": "qcow2", "node-name": "qb", "file": "fb", "read-only": True},
            {"driver": "file", "node-name": "fb", "filename": t.path("b.qcow2"), "read-only": True},
            label="all three together")
    t.nodes("nodes read-only")
    t.graph("graph read-only")
    _reopen(t, {"driver": "file", "node-name": "fb", "filename": t.path("b.qcow2")},
            {"driver": "qcow2", "node-name": "qb", "file": "fb"}, label="file first, then its user")
    t.graph("graph after")


def scn_reopen_backing(t):
    t.img("base.qcow2", size="16M", writes=["write -P 0x11 0 1M"])
    t.img("other.qcow2", size="16M", writes=["write -P 0x44 0 1M"])
    t.img("top.qcow2", backing="base.qcow2", writes=["write -P 0x33 2M 1M"])
    t.start()
    t.q("blockdev-add", _qcow2(t, "top", "top.qcow2"))
    t.nodes("nodes with the header's chain")
    _reopen(t, _qcow2(t, "top", "top.qcow2"), label="backing left out")
    _reopen(t, _qcow2(t, "top", "top.qcow2", backing=None), label="detach")
    t.nodes("nodes detached")
    t.q("blockdev-add", _qcow2(t, "o", "other.qcow2", **{"read-only": True}))
    _reopen(t, _qcow2(t, "top", "top.qcow2", backing="o"), label="attach other")
    t.nodes("nodes attached")
    t.graph("graph attached")
    _reopen(t, _qcow2(t, "o", "other.qcow2", **{"read-only": True}, backing="top"), label="cycle")
    _reopen(t, _qcow2(t, "top", "top.qcow2", backing="nope"), label="unknown backing")
    # Commit through the new chain: the job makes o writable (a reopen of
    # its own) and the data land in other.qcow2.
    t.q("block-commit", {"job-id": "j", "device": "top"})
    t.ev("BLOCK_JOB_READY", keys=("device", "type"))
    t.q("block-job-complete", {"device": "j"})
    t.job_states("j")
    t.nodes("nodes after commit")
    t.stop()
    t.sh("expected", ["qemu-img", "convert", "-O", "raw", t.path("other.qcow2"), t.path("got.raw")])
    t.sh("pattern of other kept", ["qemu-io", "-f", "raw", "-c", "read -P 0x44 0 1M", t.path("got.raw")])
    t.sh("pattern of top committed", ["qemu-io", "-f", "raw", "-c", "read -P 0x33 2M 1M", t.path("got.raw")])
    t.backing_of("top's header unchanged", "top.qcow2")
    t.check("other consistent", "other.qcow2")


def scn_reopen_file_switch(t):
    t.img("a.qcow2", size="16M", writes=["write -P 0x55 0 1M"])
    t.sh("copy", ["cp", t.path("a.qcow2"), t.path("b.qcow2")])
    t.start()
    t.q("blockdev-add", _qcow2(t, "q", "a.qcow2"))
    t.q("blockdev-add", {"driver": "file", "node-name": "fb", "filename": t.path("b.qcow2")})
    _reopen(t, {"driver": "qcow2", "node-name": "q", "file": "fb"}, label="to the copy")
    t.nodes("nodes switched")
    t.graph("graph switched")
    _qemu_io(t, "the old file is free", "-c", "write -P 0x66 0 4k", t.path("a.qcow2"))
    _reopen(t, {"driver": "qcow2", "node-name": "q", "file": "q"}, label="cycle")
    _reopen(t, {"driver": "qcow2", "node-name": "q", "file": "nope"}, label="unknown file")
    t.stop()
    t.check("copy consistent", "b.qcow2")


def scn_x_blockdev_reopen(t):
    t.img("a.qcow2", size="16M")
    t.start()
    t.q("blockdev-add", _qcow2(t, "q", "a.qcow2"))
    t.q("x-blockdev-reopen", _qcow2(t, "q", "a.qcow2", **{"read-only": True}), label="legacy form")
    t.nodes("nodes after the legacy form")
