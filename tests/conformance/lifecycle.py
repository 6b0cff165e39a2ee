"""Image lifecycle scenarios for ../shared/conformance/conform.py, run side
by side on qemu-storage-daemon and blockd:

  python3 ../shared/conformance/conform.py --compare --bin /tmp/blockd tests/conformance/lifecycle.py
"""


def scn_create_then_use(t):
    t.sh("empty file", ["touch", t.path("new.qcow2")])
    t.start()
    t.q("blockdev-create", {"job-id": "c1", "options": {"driver": "file",
                                                         "filename": t.path("raw.img"), "size": 4 << 20}})
    t.job_states("c1", final=("concluded",))
    t.q("job-dismiss", {"id": "c1"})
    t.q("blockdev-add", {"driver": "file", "node-name": "f", "filename": t.path("new.qcow2")})
    t.q("blockdev-create", {"job-id": "c2", "options": {"driver": "qcow2", "file": "f", "size": 32 << 20,
                                                         "cluster-size": 4096, "lazy-refcounts": True}})
    t.job_states("c2", final=("concluded",))
    t.q("job-dismiss", {"id": "c2"})
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": "f"})
    t.q("block_resize", {"node-name": "q", "size": 64 << 20})
    t.q("block_resize", {"node-name": "f", "size": 1 << 20}, label="resize refused on the file")
    t.q("block_resize", {"node-name": "q", "size": 16 << 20})
    t.q("blockdev-snapshot-internal-sync", {"device": "q", "name": "s1"})
    t.q("blockdev-snapshot-internal-sync", {"device": "q", "name": "s1"}, label="duplicate snapshot")
    t.q("blockdev-snapshot-delete-internal-sync", {"device": "q", "name": "s1"},
        project=lambda r: (r["id"], r["name"], r["vm-state-size"]))
    t.q("blockdev-snapshot-delete-internal-sync", {"device": "q", "name": "s1"}, label="deleted twice")
    t.nodes("nodes")
    t.stop()
    t.check("created image consistent", "new.qcow2")


def scn_snapshot_sync_under_user(t):
    t.img("base.qcow2", size="8M", writes=["write -P 0x11 0 1M"])
    t.start()
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "base",
                         "file": {"driver": "file", "filename": t.path("base.qcow2")}})
    t.q("blockdev-add", {"driver": "raw", "node-name": "user", "file": "base"})
    t.q("blockdev-snapshot-sync", {"node-name": "base", "snapshot-file": t.path("over.qcow2"),
                                   "snapshot-node-name": "over"})
    t.graph("graph after snapshot")
    t.q("change-backing-file", {"device": "user", "image-node-name": "over", "backing-file": "base.qcow2"},
        label="change-backing-file needs a root")
    t.q("blockdev-del", {"node-name": "user"})
    t.nodes("nodes after the user left")
    t.stop()
    t.backing_of("overlay names base", "over.qcow2")
    t.check("overlay consistent", "over.qcow2")
