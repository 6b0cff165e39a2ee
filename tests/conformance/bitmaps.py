"""Dirty bitmap scenarios for ../shared/conformance/conform.py, run side by
side on qemu-storage-daemon and blockd:

  python3 ../shared/conformance/conform.py --compare --bin /tmp/blockd tests/conformance/bitmaps.py

Writes reach the nodes over an NBD export (qemu-io), so both daemons see
the same requests; the bitmaps are compared by their sha256, their query
entries and what nbdinfo reads of their qemu:dirty-bitmap context.
"""
import time


def _nbd(t, node, writable=True, bitmaps=None, name=None):
    t.q("nbd-server-start", {"addr": {"type": "unix", "data": {"path": t.path("nbd.sock")}}})
    args = {"type": "nbd", "id": "e-" + node, "node-name": node, "writable": writable}
    if bitmaps is not None:
        args["bitmaps"] = bitmaps
    if name:
        args["name"] = name
    t.q("block-export-add", args, label="export " + node)


def _io(t, label, export, *cmds):
    argv = ["qemu-io", "-f", "raw"]
    for c in cmds:
        argv += ["-c", c]
    t.sh(label, argv + [f"nbd+unix:///{export}?socket={t.path('nbd.sock')}"])


def _sum(t, node, name):
    t.q("x-debug-block-dirty-bitmap-sha256", {"node": node, "name": name}, label=f"sha256 {node}/{name}")


def scn_bitmap_tracking(t):
    t.img("a.qcow2", size="64M")
    t.start()
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "a",
                         "file": {"driver": "file", "filename": t.path("a.qcow2")}})
    t.q("block-dirty-bitmap-add", {"node": "a", "name": "full"})
    t.q("block-dirty-bitmap-add", {"node": "a", "name": "fine", "granularity": 512})
    t.q("block-dirty-bitmap-add", {"node": "a", "name": "coarse", "granularity": 1 << 24})
    t.q("block-dirty-bitmap-add", {"node": "a", "name": "off", "disabled": True})
    _nbd(t, "a")
    _io(t, "writes", "a", "write 0 1", "write 65535 2", "write 1M 300k", "write -z 7M 64k",
        "write 63M 1M", "discard 20M 1M", "write 33554431 1")
    for b in ("full", "fine", "coarse", "off"):
        _sum(t, "a", b)
    t.nodes("bitmaps after writes")
    t.q("block-dirty-bitmap-merge", {"node": "a", "target": "off", "bitmaps": ["fine", {"node": "a", "name": "coarse"}]})
    _sum(t, "a", "off")
    t.q("block-dirty-bitmap-clear", {"node": "a", "name": "full"})
    t.q("block-dirty-bitmap-disable", {"node": "a", "name": "fine"})
    _io(t, "more writes", "a", "write 10M 4k", "write 40M 64k")
    for b in ("full", "fine", "coarse", "off"):
        _sum(t, "a", b)
    t.q("block-dirty-bitmap-enable", {"node": "a", "name": "fine"})
    t.q("block-dirty-bitmap-remove", {"node": "a", "name": "coarse"})
    t.nodes("bitmaps at the end")
    t.stop()
    t.check("image consistent", "a.qcow2")


def scn_bitmap_nbd_context(t):
    t.img("r.raw", size="8M", fmt="raw")
    t.start()
    t.q("blockdev-add", {"driver": "raw", "node-name": "r",
                         "file": {"driver": "file", "filename": t.path("r.raw")}})
    t.q("block-dirty-bitmap-add", {"node": "r", "name": "b", "granularity": 4096})
    _nbd(t, "r")
    _io(t, "writes", "r", "write 0 4k", "write 100k 10k", "write 5M 1M")
    t.q("block-dirty-bitmap-disable", {"node": "r", "name": "b"})
    t.q("block-export-add", {"type": "nbd", "id": "ro", "node-name": "r", "name": "ro", "bitmaps": ["b"]},
        label="read-only export of the bitmap")
    t.nodes("busy bitmap")
    t.q("block-dirty-bitmap-remove", {"node": "r", "name": "b"}, label="remove busy")
    t.sh("nbdinfo map of the bitmap", ["nbdinfo", "--map=qemu:dirty-bitmap:b", "--json",
                                        f"nbd+unix:///ro?socket={t.path('nbd.sock')}"], keep=("rc", "out"))
    t.sh("nbdinfo map of allocation", ["nbdinfo", "--map", "--json",
                                        f"nbd+unix:///ro?socket={t.path('nbd.sock')}"], keep=("rc",))
    t.sh("qemu-img map with x-dirty-bitmap", ["qemu-img", "map", "--output=json", "--image-opts",
                                              "driver=nbd,server.type=unix,server.path=" + t.path("nbd.sock") +
                                              ",export=ro,x-dirty-bitmap=qemu:dirty-bitmap:b"], keep=("rc", "out"))
    t.q("block-export-del", {"id": "ro"})
    t.q("block-dirty-bitmap-remove", {"node": "r", "name": "b"}, label="remove after the export left")
    t.stop()


def scn_bitmap_persistent(t):
    t.img("a.qcow2", size="16M")
    t.sh("qemu-img bitmap --add", ["qemu-img", "bitmap", "--add", "-g", "128k", t.path("a.qcow2"), "old"])
    t.start()
    add = {"driver": "qcow2", "node-name": "a",
           "file": {"driver": "file", "node-name": "af", "filename": t.path("a.qcow2")}}
    t.q("blockdev-add", add)
    t.q("block-dirty-bitmap-add", {"node": "a", "name": "p", "persistent": True, "granularity": 4096})
    t.q("block-dirty-bitmap-add", {"node": "a", "name": "old", "persistent": True}, label="name already loaded")
    t.q("block-dirty-bitmap-add", {"node": "a", "name": "x" * 1024, "persistent": True}, label="name too long")
    _nbd(t, "a")
    _io(t, "writes", "a", "write 0 64k", "write 3M 1M", "write 16773120 4096")
    t.q("block-export-del", {"id": "e-a"})
    t.nodes("loaded and new bitmaps")
    t.sh("qemu-img info while open", ["qemu-img", "info", "-U", "--output=json", t.path("a.qcow2")], keep=("rc",))
    t.q("blockdev-del", {"node-name": "a"})
    t.sh("qemu-img info", ["qemu-img", "info", "--output=json", t.path("a.qcow2")], keep=("rc",))
    t.check("stored bitmaps consistent", "a.qcow2")
    t.q("blockdev-add", add)
    _sum(t, "a", "p")
    _sum(t, "a", "old")
    t.q("block-dirty-bitmap-remove", {"node": "a", "name": "old"})
    t.stop()
    t.check("image consistent", "a.qcow2")


def scn_bitmap_incremental_backup(t):
    t.img("src.qcow2", size="16M", writes=["write -P 0x11 0 8M"])
    for n in ("full", "inc"):
        t.img(n + ".qcow2", size="16M")
    t.start()
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "src",
                         "file": {"driver": "file", "filename": t.path("src.qcow2")}})
    for n in ("full", "inc"):
        t.q("blockdev-add", {"driver": "qcow2", "node-name": n,
                             "file": {"driver": "file", "filename": t.path(n + ".qcow2")}})
    t.q("block-dirty-bitmap-add", {"node": "src", "name": "b"})
    t.q("blockdev-backup", {"job-id": "full", "device": "src", "target": "full", "sync": "full",
                            "bitmap": "b", "bitmap-mode": "on-success"})
    t.job_states("full")
    _sum(t, "src", "b")
    _nbd(t, "src")
    _io(t, "writes", "src", "write -P 0x22 1M 4k", "write -P 0x33 9M 200k")
    _sum(t, "src", "b")
    t.q("blockdev-backup", {"job-id": "inc", "device": "src", "target": "inc", "sync": "incremental",
                            "bitmap": "b"})
    t.job_states("inc")
    _sum(t, "src", "b")
    t.nodes("after the incremental backup")
    t.stop()
    # Host offsets are allocation, which differs: only guest ranges count.
    t.sh("incremental holds the dirty clusters",
         ["sh", "-c", "qemu-img map --output=json " + t.path("inc.qcow2") + " | sed 's/, \"offset\": [0-9]*//'"],
         keep=("rc", "out"))
    t.check("incremental consistent", "inc.qcow2")


def _job_bitmaps(t, label):
    """Record every node's dirty-bitmaps, the jobs' anonymous ones too."""
    t.learn_names()
    t.q("query-named-block-nodes", {"flat": True}, label=label,
        project=lambda r: sorted([t._scrub(n["node-name"]), n.get("dirty-bitmaps")] for n in r if n.get("dirty-bitmaps")))


def scn_bitmap_job_internals(t):
    # Speed limits hold each job while its bitmaps are queried.
    t.img("src.qcow2", size="16M", writes=["write -P 0x11 0 4M"])
    for n in ("t1", "t2", "t3"):
        t.img(n + ".qcow2", size="16M")
    t.start()
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "src",
                         "file": {"driver": "file", "filename": t.path("src.qcow2")}})
    for n in ("t1", "t2", "t3"):
        t.q("blockdev-add", {"driver": "qcow2", "node-name": n,
                             "file": {"driver": "file", "filename": t.path(n + ".qcow2")}})
    t.q("block-dirty-bitmap-add", {"node": "src", "name": "b", "granularity": 1 << 17})
    t.q("block-dirty-bitmap-add", {"node": "src", "name": "fine", "granularity": 4096, "persistent": True})
    _nbd(t, "src")
    _io(t, "writes", "src", "write -P 0x22 1M 4k", "write -P 0x33 9M 200k")
    t.q("blockdev-backup", {"job-id": "j1", "device": "src", "target": "t1", "sync": "full", "speed": 1})
    time.sleep(0.5)
    _io(t, "write during the full backup", "src", "write -P 0x44 14M 4k")
    _job_bitmaps(t, "during a full backup")
    t.q("block-job-cancel", {"device": "j1", "force": True})
    t.job_states("j1", label="full backup cancelled")
    _job_bitmaps(t, "after the full backup")
    t.q("blockdev-backup", {"job-id": "j2", "device": "src", "target": "t2", "sync": "bitmap", "bitmap": "b",
                            "bitmap-mode": "on-success", "speed": 1})
    time.sleep(0.5)
    _io(t, "write during the bitmap backup", "src", "write -P 0x55 12M 64k")
    _job_bitmaps(t, "during a bitmap backup")
    t.q("block-dirty-bitmap-clear", {"node": "src", "name": "b"}, label="clear the frozen bitmap")
    t.q("block-job-cancel", {"device": "j2", "force": True})
    t.job_states("j2", label="bitmap backup cancelled")
    _job_bitmaps(t, "after the bitmap backup (reclaimed)")
    _sum(t, "src", "b")
    t.q("blockdev-mirror", {"job-id": "j3", "device": "src", "target": "t3", "sync": "none", "speed": 1})
    time.sleep(0.5)
    _io(t, "first write during the mirror", "src", "write -P 0x66 13M 64k")
    time.sleep(0.5)
    _io(t, "second write during the mirror", "src", "write -P 0x77 15M 4k")
    _job_bitmaps(t, "during a mirror")
    t.q("block-job-cancel", {"device": "j3", "force": True})
    t.job_states("j3", label="mirror cancelled")
    _job_bitmaps(t, "after the mirror")
    t.stop()
    t.check("source consistent", "src.qcow2")
