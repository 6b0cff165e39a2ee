"""Dirty bitmap scenarios for ../shared/conformance/conform.py, run side by
side on qemu-storage-daemon and blockd:

  python3 ../shared/conformance/conform.py --compare --bin /tmp/blockd tests/conformance/bitmaps.py

Writes reach the nodes over an NBD export (qemu-io), so both daemons see
the same requests; the bitmaps are compared by their sha256, their query
entries and what nbdinfo reads of their qemu:dirty-bitmap context.
"""


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
