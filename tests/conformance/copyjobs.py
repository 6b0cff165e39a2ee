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


def scn_drive_mirror_top_new_image(t):
    _chain(t)
    t.start()
    _add(t, "top", "top.qcow2")
    t.q("nbd-server-start", {"addr": {"type": "unix", "data": {"path": t.path("nbd.sock")}}})
    t.q("block-export-add", {"type": "nbd", "id": "e", "node-name": "top", "writable": True})
    t.q("drive-mirror", {"job-id": "m", "device": "top", "target": t.path("new.qcow2"), "sync": "top",
                         "node-name": "new"})
    t.ev("BLOCK_JOB_READY", keys=("device", "type", "len", "offset"))
    t.q("block-job-complete", {"device": "m"})
    t.job_states("m")
    t.q("query-block-exports")
    t.graph("graph after")
    t.stop()
    t.compare("new image holds the data", "new.qcow2", "expect.raw")
    t.check("new image consistent", "new.qcow2")
    t.backing_of("new image backed by mid", "new.qcow2")


def scn_drive_mirror_refusals(t):
    _chain(t)
    t.start()
    _add(t, "top", "top.qcow2")
    t.q("drive-mirror", {"device": "top", "target": t.path("x.qcow2"), "sync": "full", "replaces": "top"})
    t.q("drive-mirror", {"device": "top", "target": t.path("x.qcow2"), "sync": "full", "format": "vmdk9"})
    t.q("drive-mirror", {"device": "top", "target": t.path("none.qcow2"), "sync": "full", "mode": "existing"})
    t.q("drive-mirror", {"device": "top", "target": t.path("top.qcow2"), "sync": "full", "mode": "existing"})
    t.q("drive-mirror", {"device": "top", "target": t.path("nodir/x.qcow2"), "sync": "full"})
    t.q("drive-mirror", {"device": "top", "target": t.path("x.qcow2"), "sync": "full", "node-name": "top"})
    t.nodes("nodes after")
    t.stop()


def scn_drive_backup_none_fleecing(t):
    _chain(t)
    t.start()
    _add(t, "top", "top.qcow2")
    t.q("drive-backup", {"job-id": "b", "device": "top", "target": t.path("fleece.qcow2"), "sync": "none"})
    t.nodes("nodes during")
    t.graph("graph during")
    t.q("block-job-cancel", {"device": "b"})
    t.job_states("b")
    t.nodes("nodes after")
    t.stop()
    t.backing_of("fleece backed by top", "fleece.qcow2")
    t.check("fleece consistent", "fleece.qcow2")


def scn_drive_backup_top(t):
    _chain(t)
    t.start()
    _add(t, "top", "top.qcow2")
    t.q("drive-backup", {"job-id": "b", "device": "top", "target": t.path("b.qcow2"), "sync": "top"})
    t.job_states("b")
    t.nodes("nodes after")
    t.stop()
    t.compare("backup reads as the source", "b.qcow2", "expect.raw")
    t.check("backup consistent", "b.qcow2")
    t.backing_of("backup backed by mid", "b.qcow2")


def scn_fleecing_blockdev_add(t):
    t.img("src.qcow2", size="8M", writes=["write -P 0x11 0 8M"])
    t.sh("reference image", ["qemu-img", "convert", "-O", "raw", t.path("src.qcow2"), t.path("expect.raw")])
    t.img("tgt.qcow2", size="8M")
    t.start()
    _add(t, "src", "src.qcow2")
    _add(t, "tgt", "tgt.qcow2")
    t.q("blockdev-add", {"driver": "copy-before-write", "node-name": "cbw", "file": "src", "target": "tgt"})
    t.q("blockdev-add", {"driver": "snapshot-access", "node-name": "acc", "file": "cbw"})
    t.q("nbd-server-start", {"addr": {"type": "unix", "data": {"path": t.path("nbd.sock")}}})
    t.q("block-export-add", {"type": "nbd", "id": "guest", "node-name": "cbw", "writable": True})
    t.q("block-export-add", {"type": "nbd", "id": "fleece", "node-name": "acc"})
    t.sh("guest writes", ["qemu-io", "-f", "raw", "-c", "write -P 0x22 64k 1M",
                          "nbd+unix:///cbw?socket=" + t.path("nbd.sock")])
    t.sh("snapshot reads the point in time", ["qemu-img", "compare", "-f", "raw", "-F", "raw",
                                              "nbd+unix:///acc?socket=" + t.path("nbd.sock"), t.path("expect.raw")])
    t.nodes("nodes during")
    t.graph("graph during")
    t.stop()
    t.check("target consistent", "tgt.qcow2")


def _qemu_io(t, label, export, command, read_only=False):
    """One qemu-io command on an NBD export: its exit code and why it failed."""
    ro = "-r " if read_only else ""
    uri = "nbd+unix:///%s?socket=%s" % (export, t.path("nbd.sock"))
    t.sh(label, ["sh", "-c", f"out=$(qemu-io {ro}-f raw -c '{command}' '{uri}' 2>&1); rc=$?; "
                 "printf '%s\\n' \"$out\" | grep failed; exit $rc"], keep=("rc", "out"))


def _cbw_slow_target(t, slow_write_lands, **cbw_opts):
    """A copy-before-write filter whose target is throttled to 16 KiB/s of
    writes: the first guest write's copy fills the throttle's bucket, so the
    copy before the second write (at 1M) waits about four seconds, longer
    than a cbw-timeout of 1."""
    t.img("src.qcow2", size="4M", writes=["write -P 0x11 0 4M"])
    t.img("tgt.qcow2", size="4M")
    model = ["write -P 0x22 0 64k"] + (["write -P 0x33 1M 64k"] if slow_write_lands else [])
    t.img("model.raw", size="4M", fmt="raw", writes=["write -P 0x11 0 4M"] + model)
    t.start()
    t.q("object-add", {"qom-type": "throttle-group", "id": "slow", "limits": {"bps-write": 16384}})
    _add(t, "src", "src.qcow2")
    t.q("blockdev-add", {"driver": "throttle", "node-name": "tgt", "throttle-group": "slow",
                         "file": {"driver": "qcow2", "node-name": "tgt-image",
                                  "file": {"driver": "file", "filename": t.path("tgt.qcow2")}}})
    t.q("blockdev-add", dict({"driver": "copy-before-write", "node-name": "cbw", "file": "src", "target": "tgt"},
                             **cbw_opts))
    t.q("blockdev-add", {"driver": "snapshot-access", "node-name": "acc", "file": "cbw"})
    t.q("nbd-server-start", {"addr": {"type": "unix", "data": {"path": t.path("nbd.sock")}}})
    t.q("block-export-add", {"type": "nbd", "id": "guest", "node-name": "cbw", "writable": True})
    t.q("block-export-add", {"type": "nbd", "id": "fleece", "node-name": "acc"})
    _qemu_io(t, "first write fills the bucket", "cbw", "write -P 0x22 0 64k")
    _qemu_io(t, "write whose copy is slow", "cbw", "write -P 0x33 1M 64k")
    t.q("query-named-block-nodes", {"flat": True}, label="bitmap counts",
        project=lambda r: sorted([n["node-name"], [b["count"] for b in n.get("dirty-bitmaps", [])]]
                                 for n in r if n["node-name"] in ("cbw", "src")))
    _qemu_io(t, "snapshot read", "acc", "read -P 0x11 0 4M", read_only=True)
    _qemu_io(t, "untouched cluster through the snapshot", "acc", "read -P 0x11 3M 64k", read_only=True)
    t.stop()
    t.check("source consistent", "src.qcow2")
    t.check("target consistent", "tgt.qcow2")
    t.compare("source holds the writes that went through", "src.qcow2", "model.raw")
    t.sh("the slow copy reached the target before exit",
         ["qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x11 1M 64k", t.path("tgt.qcow2")])


def scn_cbw_timeout_break_guest_write(t):
    _cbw_slow_target(t, False, **{"cbw-timeout": 1})


def scn_cbw_timeout_break_snapshot(t):
    _cbw_slow_target(t, True, **{"cbw-timeout": 1, "on-cbw-error": "break-snapshot"})


def scn_cbw_timeout_zero_waits(t):
    _cbw_slow_target(t, True, **{"cbw-timeout": 0})
