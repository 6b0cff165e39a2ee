"""rbd scenarios for ../shared/conformance/conform.py, run side by side on
qemu-storage-daemon and blockd against the throw-away cluster of
tests/ceph (started first; $BLOCKD_CEPH_CONF names its ceph.conf, by
default /tmp/blockd-ceph/ceph.conf):

  tests/ceph/start.sh
  python3 ../shared/conformance/conform.py --compare --bin /tmp/blockd tests/conformance/rbd.py
  tests/ceph/stop.sh
"""
import os
import subprocess
import time

CONF = os.environ.get("BLOCKD_CEPH_CONF", "/tmp/blockd-ceph/ceph.conf")


def fresh(name):
    """The same image name for both daemons (it appears in error texts):
    an image of that name left by an earlier run is renamed away (a
    killed client's watch would keep it from being removed)."""
    img = f"conf-{name}"
    subprocess.run(["rbd", "-c", CONF, "mv", f"rbd/{img}", f"rbd/old-{img}-{time.time_ns()}"],
                   capture_output=True)
    return img


def image(t, name, size="16M"):
    img = fresh(name)
    t.sh(f"rbd create {name}", ["rbd", "-c", CONF, "create", "--size", size, f"rbd/{img}"])
    return img


def node(name, img, **extra):
    d = {"driver": "rbd", "node-name": name, "pool": "rbd", "image": img, "conf": CONF}
    d.update(extra)
    return d


def scn_rbd_open(t):
    img = image(t, "open")
    t.sh("snapshot", ["rbd", "-c", CONF, "snap", "create", f"rbd/{img}@s1"])
    t.start()
    t.q("blockdev-add", node("r", img))
    t.q("blockdev-add", node("p", img, pool="nosuchpool"), label="unknown pool")
    t.q("blockdev-add", node("i", "nosuchimage"), label="unknown image")
    t.q("blockdev-add", node("c", img, conf=t.path("nosuch.conf")), label="bad conf")
    t.q("blockdev-add", node("s", img, snapshot="s1"), label="snapshot needs read-only")
    t.q("blockdev-add", node("s", img, snapshot="nosnap", **{"read-only": True}), label="unknown snapshot")
    t.q("blockdev-add", node("s", img, snapshot="s1", **{"read-only": True}))
    t.q("blockdev-add", node("a", img, snapshot="s1", **{"auto-read-only": True}))
    t.q("blockdev-add", node("n", img, namespace="nons"), label="unknown namespace")
    t.q("blockdev-add", {"driver": "raw", "node-name": "top", "file": "s"})
    t.nodes("nodes")
    t.q("block_resize", {"node-name": "r", "size": 32 << 20})
    t.q("block_resize", {"node-name": "s", "size": 32 << 20}, label="resize of a snapshot")
    t.q("blockdev-reopen", {"options": [node("s", img, snapshot="s1", **{"read-only": False})]},
        label="snapshot reopened read-write")
    t.nodes("nodes after resize")
    for n in ["top", "s", "a", "r"]:
        t.q("blockdev-del", {"node-name": n})
    t.stop()


def scn_rbd_create_and_commit(t):
    base = fresh("base")
    t.start()
    t.q("blockdev-create", {"job-id": "c1", "options": {"driver": "rbd", "location": {
        "pool": "rbd", "image": base, "conf": CONF}, "size": 32 << 20, "cluster-size": 1 << 20}})
    t.job_states("c1", final=("concluded",))
    t.q("job-dismiss", {"id": "c1"})
    t.q("blockdev-create", {"job-id": "c2", "options": {"driver": "rbd", "location": {
        "pool": "rbd", "image": base, "conf": CONF}, "size": 32 << 20}}, label="create an existing image")
    t.job_states("c2", final=("concluded",))
    t.q("job-dismiss", {"id": "c2"})
    uri = f"rbd:rbd/{base}:conf={CONF}"
    t.sh("base data", ["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 8M", uri])
    t.sh("overlay", ["qemu-img", "create", "-q", "-f", "qcow2", "-b", uri, "-F", "raw", t.path("top.qcow2")])
    t.sh("overlay data", ["qemu-io", "-f", "qcow2", "-c", "write -P 0x22 4M 8M", t.path("top.qcow2")])
    t.sh("reference", ["qemu-img", "convert", "-O", "raw", t.path("top.qcow2"), t.path("ref.raw")])
    t.q("blockdev-add", node("base", base))
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "top", "backing": "base",
                         "file": {"driver": "file", "filename": t.path("top.qcow2")}})
    t.nodes("chain")
    t.q("block-commit", {"job-id": "j", "device": "top"})
    t.job_states("j", final=("ready",))
    t.q("block-job-complete", {"device": "j"})
    t.job_states("j", final=("null",))
    t.nodes("after commit")
    t.q("blockdev-del", {"node-name": "base"})
    t.stop()
    t.sh("rbd equals the reference", ["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", uri, t.path("ref.raw")])
