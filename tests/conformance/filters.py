"""Filter and test driver scenarios (throttle and throttle-group,
copy-on-read, blkdebug) for ../shared/conformance/conform.py, run side by
side on qemu-storage-daemon and blockd:

  python3 ../shared/conformance/conform.py --compare --bin /tmp/blockd tests/conformance/filters.py

I/O goes through an NBD export of the filter node, driven by qemu-io, so
that both daemons see the same requests.
"""


def _file(t, path, **extra):
    return dict({"driver": "file", "filename": t.path(path)}, **extra)


def _export(t, node):
    t.q("nbd-server-start", {"addr": {"type": "unix", "data": {"path": t.path("nbd.sock")}}})
    t.q("block-export-add", {"type": "nbd", "id": "e", "node-name": node, "name": "disk", "writable": True})


def _io(t, label, *cmds):
    argv = ["qemu-io", "-f", "raw"]
    for c in cmds:
        # -q: no timing statistics, only what failed or mismatched.
        verb, _, rest = c.partition(" ")
        argv += ["-c", f"{verb} -q {rest}" if verb in ("read", "write") else c]
    argv.append(f"nbd+unix:///disk?socket={t.path('nbd.sock')}")
    t.sh(label, argv, keep=("rc", "out"))


def scn_throttle_group_objects(t):
    t.img("a.img", size="1M", fmt="raw")
    t.start()
    t.q("object-add", {"qom-type": "throttle-group", "id": "tg", "limits": {"bps-total": 1048576, "iops-total": 100,
                                                                        "iops-size": 4096}})
    t.q("object-add", {"qom-type": "throttle-group", "id": "bad1", "limits": {"bps-total": 5, "bps-read": 5}})
    t.q("object-add", {"qom-type": "throttle-group", "id": "bad2", "limits": {"bps-total": 5, "bps-total-max": 4}})
    t.q("object-add", {"qom-type": "throttle-group", "id": "bad3", "limits": {"iops-size": 512}})
    t.q("object-add", {"qom-type": "throttle-group", "id": "burst", "limits": {"iops-total": 10, "iops-total-max": 100,
                                                                           "iops-total-max-length": 5}})
    t.q("blockdev-add", {"driver": "throttle", "node-name": "t0", "throttle-group": "nope", "file": _file(t, "a.img")})
    t.q("blockdev-add", {"driver": "throttle", "node-name": "t0", "throttle-group": "tg", "file": _file(t, "a.img")})
    t.q("blockdev-add", {"driver": "throttle", "node-name": "t1", "throttle-group": "burst", "file": "t0"})
    t.q("blockdev-add", {"driver": "raw", "node-name": "r", "file": "t1"})
    t.nodes()
    t.graph()
    t.q("object-del", {"id": "tg"})
    t.q("blockdev-del", {"node-name": "r"})
    t.q("blockdev-del", {"node-name": "t1"})
    t.q("object-del", {"id": "burst"})
    t.q("blockdev-del", {"node-name": "t0"})
    t.q("object-del", {"id": "tg"})
    t.nodes("nodes after")
    t.stop()


def scn_throttle_data_through_export(t):
    t.img("a.img", size="8M", fmt="raw")
    t.start()
    t.q("object-add", {"qom-type": "throttle-group", "id": "tg", "limits": {"bps-total": 64 << 20}})
    t.q("blockdev-add", {"driver": "raw", "node-name": "r", "file": {
        "driver": "throttle", "node-name": "thr", "throttle-group": "tg", "file": _file(t, "a.img")}})
    _export(t, "r")
    _io(t, "write through throttle", "write -P 0x5a 0 4M", "write -z 1M 64k", "read -P 0x5a 0 1M",
        "read -P 0 1M 64k", "flush")
    t.stop()
    t.sh("data on disk", ["qemu-io", "-f", "raw", "-c", "read -P 0x5a 2M 2M", t.path("a.img")], keep=("rc",))


def _chain(t):
    t.img("base.qcow2", size="8M", writes=["write -P 0xbb 0 1M", "write -P 0xbb 2M 1M"])
    t.img("mid.qcow2", size="8M", backing="base.qcow2", writes=["write -P 0x33 1M 1M"])
    t.img("top.qcow2", size="8M", backing="mid.qcow2", writes=["write -P 0x77 3M 1M"])


def _qcow2(t, name, path, **extra):
    return dict({"driver": "qcow2", "node-name": name, "file": _file(t, path)}, **extra)


def _alone(t, name):
    """A qcow2 image without its backing file, for qemu-img map."""
    return 'json:{"driver": "qcow2", "backing": null, "file": {"driver": "file", "filename": "%s"}}' % t.path(name)


def scn_cor_bottom_copies_up(t):
    _chain(t)
    t.start()
    t.q("blockdev-add", _qcow2(t, "top", "top.qcow2", backing=_qcow2(t, "mid", "mid.qcow2")))
    t.q("blockdev-add", {"driver": "copy-on-read", "node-name": "cor", "file": "top", "bottom": "nope"})
    t.q("blockdev-add", {"driver": "copy-on-read", "node-name": "cor", "file": "top", "bottom": "mid"})
    t.q("blockdev-add", {"driver": "raw", "node-name": "r", "file": "cor"})
    t.nodes()
    t.graph()
    _export(t, "r")
    _io(t, "read through copy-on-read", "read -P 0xbb 0 1M", "read -P 0x33 1M 1M", "read -P 0xbb 2M 1M",
        "read -P 0x77 3M 1M", "read -P 0 4M 4M")
    t.stop()
    # mid's cluster was copied into top, base's were not.
    t.sh("top's allocation", ["qemu-img", "map", "--output=json", _alone(t, "top.qcow2")], keep=("rc", "out"))
    t.check("top consistent", "top.qcow2")


def scn_cor_whole_chain(t):
    _chain(t)
    t.start()
    t.q("blockdev-add", {"driver": "raw", "node-name": "r", "file": {
        "driver": "copy-on-read", "node-name": "cor", "file": _qcow2(t, "top", "top.qcow2")}})
    _export(t, "r")
    _io(t, "read the first 4 MiB", "read -P 0xbb 0 1M", "read -P 0x33 1M 1M", "read 2M 2M")
    _io(t, "write then read", "write -P 0x99 2M 4k", "read -P 0x99 2M 4k", "read -P 0xbb 2052k 4k")
    t.stop()
    t.sh("top's allocation", ["qemu-img", "map", "--output=json", _alone(t, "top.qcow2")], keep=("rc", "out"))
    t.check("top consistent", "top.qcow2")


def scn_blkdebug_options(t):
    t.img("a.img", size="1M", fmt="raw")
    t.start()
    t.q("blockdev-add", {"driver": "blkdebug", "node-name": "d", "image": _file(t, "a.img"), "align": 3})
    t.q("blockdev-add", {"driver": "blkdebug", "node-name": "d", "image": _file(t, "a.img"), "align": 4096,
                         "max-transfer": 1024})
    t.q("blockdev-add", {"driver": "blkdebug", "node-name": "d", "image": _file(t, "a.img"),
                         "inject-error": [{"event": "nope"}]})
    t.q("blockdev-add", {"driver": "blkdebug", "node-name": "d", "config": t.path("none.conf"),
                         "image": _file(t, "a.img")})
    t.q("blockdev-add", {"driver": "blkdebug", "node-name": "d", "image": _file(t, "a.img"), "align": 4096,
                         "inject-error": [{"event": "read_aio", "sector": 1}],
                         "take-child-perms": ["resize"], "unshare-child-perms": ["write-unchanged"]})
    t.q("blockdev-add", {"driver": "raw", "node-name": "r", "file": "d"})
    t.nodes()
    t.graph()
    t.stop()


def scn_blkdebug_read_error(t):
    # Data, not holes: an NBD server answers a read of a hole without
    # reading it.
    t.img("a.img", size="4M", fmt="raw", writes=["write -P 0x11 0 4M"])
    t.start()
    t.q("blockdev-add", {"driver": "raw", "node-name": "r", "file": {
        "driver": "blkdebug", "image": _file(t, "a.img"),
        "inject-error": [{"event": "read_aio", "sector": 16, "errno": 28, "once": True}]}})
    _export(t, "r")
    _io(t, "read beside the sector", "read 0 4k")
    _io(t, "read of the sector fails once", "read 8k 4k")
    _io(t, "read again", "read 8k 4k")
    t.stop()


def scn_blkdebug_mirror_error_report(t):
    t.img("src.img", size="4M", fmt="raw", writes=["write -P 0x42 0 4M"])
    t.img("dst.img", size="4M", fmt="raw")
    t.start()
    t.q("blockdev-add", {"driver": "raw", "node-name": "src", "file": {
        "driver": "blkdebug", "image": _file(t, "src.img"), "inject-error": [{"event": "read_aio", "sector": 2048}]}})
    t.q("blockdev-add", {"driver": "raw", "node-name": "dst", "file": _file(t, "dst.img")})
    t.q("blockdev-mirror", {"job-id": "m", "device": "src", "target": "dst", "sync": "full",
                            "on-source-error": "report"})
    t.ev("BLOCK_JOB_ERROR", keys=("device", "operation", "action"))
    t.ev("BLOCK_JOB_COMPLETED", keys=("device", "type", "error"))
    t.job_states("m")
    t.stop()


def scn_blkdebug_mirror_error_stop(t):
    t.img("src.img", size="4M", fmt="raw", writes=["write -P 0x42 0 4M"])
    t.img("dst.img", size="4M", fmt="raw")
    t.start()
    t.q("blockdev-add", {"driver": "raw", "node-name": "src", "file": {
        "driver": "blkdebug", "image": _file(t, "src.img"),
        "inject-error": [{"event": "read_aio", "sector": 2048, "once": True}]}})
    t.q("blockdev-add", {"driver": "raw", "node-name": "dst", "file": _file(t, "dst.img")})
    t.q("blockdev-mirror", {"job-id": "m", "device": "src", "target": "dst", "sync": "full",
                            "on-source-error": "stop"})
    t.ev("BLOCK_JOB_ERROR", keys=("device", "operation", "action"))
    t.ev("JOB_STATUS_CHANGE", keys=("id", "status"), match=lambda e: e["data"]["status"] == "paused")
    t.q("block-job-resume", {"device": "m"})
    t.ev("BLOCK_JOB_READY", keys=("device", "type"))
    t.q("block-job-complete", {"device": "m"})
    t.ev("BLOCK_JOB_COMPLETED", keys=("device", "type", "error"))
    t.stop()
    t.compare("target equals source", "src.img", "dst.img")


def _quorum_images(t, corrupt):
    for name in ("a.img", "b.img", "c.img"):
        writes = ["write -P 0x11 0 1M"]
        if name in corrupt:
            writes.append(corrupt[name])
        t.img(name, size="1M", fmt="raw", writes=writes)


def scn_quorum_outvotes_corrupted_child(t):
    _quorum_images(t, {"c.img": "write -P 0xee 64k 4k"})
    t.start()
    for n in ("a", "b", "c"):
        t.q("blockdev-add", {"driver": "file", "node-name": n, "filename": t.path(n + ".img")})
    t.q("blockdev-add", {"driver": "quorum", "node-name": "q", "vote-threshold": 2, "children": ["a", "b", "c"],
                         "rewrite-corrupted": True})
    t.q("blockdev-add", {"driver": "raw", "node-name": "r", "file": "q"})
    t.nodes()
    t.graph()
    _export(t, "r")
    _io(t, "read the corrupted range", "read -P 0x11 64k 4k")
    t.ev("QUORUM_REPORT_BAD", keys=("type", "error", "node-name", "sector-num", "sectors-count"))
    _io(t, "write through quorum", "write -P 0x22 128k 4k")
    t.stop()
    t.sh("c repaired", ["qemu-io", "-f", "raw", "-c", "read -q -P 0x11 64k 4k", t.path("c.img")], keep=("rc", "out"))
    t.sh("write on every child", ["sh", "-c", "for i in a b c; do qemu-io -f raw -c 'read -q -P 0x22 128k 4k' "
                                  + t.path("") + "$i.img; done"], keep=("rc", "out"))


def scn_quorum_no_majority(t):
    _quorum_images(t, {"b.img": "write -P 0x22 0 4k", "c.img": "write -P 0x33 0 4k"})
    t.start()
    t.q("blockdev-add", {"driver": "quorum", "node-name": "q", "vote-threshold": 2, "children": [
        {"driver": "file", "filename": t.path(n + ".img")} for n in ("a", "b", "c")]})
    t.q("blockdev-add", {"driver": "raw", "node-name": "r", "file": "q"})
    _export(t, "r")
    _io(t, "read without a majority", "read 0 4k")
    t.ev("QUORUM_FAILURE", keys=("reference", "sector-num", "sectors-count"))
    t.stop()


def scn_quorum_blockdev_change(t):
    _quorum_images(t, {})
    t.img("d.img", size="1M", fmt="raw")
    t.start()
    for n in ("a", "b", "c", "d"):
        t.q("blockdev-add", {"driver": "file", "node-name": n, "filename": t.path(n + ".img")})
    t.q("blockdev-add", {"driver": "quorum", "node-name": "q", "vote-threshold": 2, "children": ["a", "b"]})
    t.q("x-blockdev-change", {"parent": "q", "node": "a"})
    t.q("x-blockdev-change", {"parent": "q", "child": "children.0"})
    t.q("x-blockdev-change", {"parent": "q", "node": "c"})
    t.q("x-blockdev-change", {"parent": "q", "node": "d"})
    t.graph()
    t.q("x-blockdev-change", {"parent": "q", "child": "children.3"})
    t.q("x-blockdev-change", {"parent": "q", "child": "children.0"})
    t.q("x-blockdev-change", {"parent": "q", "child": "children.1"})
    t.q("x-blockdev-change", {"parent": "q", "node": "a"})
    t.graph("graph after")
    t.q("blockdev-add", {"driver": "raw", "node-name": "r", "file": "q"})
    _export(t, "r")
    _io(t, "write through the changed quorum", "write -P 0x44 0 4k")
    t.stop()
    t.sh("written children", ["sh", "-c", "for i in a b c d; do qemu-io -f raw -c 'read -q -P 0x44 0 4k' "
                              + t.path("") + "$i.img; done"], keep=("rc", "out"))


def scn_preallocate_under_qcow2(t):
    t.img("a.qcow2", size="64M")
    t.start()
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": {
        "driver": "preallocate", "node-name": "p", "prealloc-align": 1048576, "prealloc-size": 4194304,
        "file": _file(t, "a.qcow2")}})
    t.nodes()
    t.graph()
    _export(t, "q")
    _io(t, "write 3 MiB", "write -P 0x5a 0 3M", "flush")
    t.sh("file grown ahead of the data", ["stat", "-c", "%s", t.path("a.qcow2")], keep=("rc", "out"))
    _io(t, "read back", "read -P 0x5a 0 3M")
    t.stop()
    t.sh("file cut back on close", ["stat", "-c", "%s", t.path("a.qcow2")], keep=("rc", "out"))
    t.check("image consistent", "a.qcow2")
