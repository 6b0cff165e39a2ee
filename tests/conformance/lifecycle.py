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


def scn_transaction_rollback_and_commit(t):
    for n, pat in (("a", "0x21"), ("b", "0x22"), ("ta", "0x23")):
        t.img(n + ".qcow2", size="4M", writes=["write -P %s 0 1M" % pat])
    t.start()
    for n in ("a", "b", "ta"):
        t.q("blockdev-add", {"driver": "qcow2", "node-name": n,
                             "file": {"driver": "file", "filename": t.path(n + ".qcow2")}})
    t.q("blockdev-add", {"driver": "raw", "node-name": "user", "file": "b"})
    snap = lambda n, f: {"type": "blockdev-snapshot-sync",
                         "data": {"node-name": n, "snapshot-file": t.path(f), "snapshot-node-name": f[:-6]}}
    t.q("transaction", {"actions": [snap("a", "a1.qcow2"),
                                    {"type": "blockdev-snapshot-internal-sync", "data": {"device": "ta", "name": "s0"}},
                                    snap("b", "b1.qcow2"), {"type": "abort", "data": {}}]},
        label="a failing last action rolls back the others")
    t.graph("graph unchanged after the rollback")
    t.q("transaction", {"actions": [{"type": "blockdev-snapshot-internal-sync", "data": {"device": "a", "name": "s1"}},
                                    {"type": "blockdev-snapshot-internal-sync", "data": {"device": "a", "name": "s1"}}]},
        label="duplicate internal snapshot in one transaction")
    t.q("transaction", {"actions": [{"type": "nope", "data": {}}]}, label="unknown action type")
    t.q("transaction", {"actions": [snap("a", "a2.qcow2"),
                                    {"type": "blockdev-backup", "data": {"device": "b", "target": "ta", "sync": "full"}}],
                        "properties": {"completion-mode": "grouped"}}, label="grouped refused for snapshots")
    t.q("transaction", {"actions": [snap("a", "a3.qcow2"), snap("b", "b3.qcow2"),
                                    {"type": "blockdev-snapshot-internal-sync", "data": {"device": "ta", "name": "s2"}}]},
        label="three actions committed")
    t.graph("graph after the commit")
    t.nodes("nodes after the commit")
    t.stop()
    t.sh("no internal snapshot left by the rollback on a", ["sh", "-c", "qemu-img snapshot -l %s | grep -c s1; true" % t.path("a.qcow2")], keep=("rc", "out"))
    t.sh("ta keeps s2 only", ["sh", "-c", "qemu-img snapshot -l %s | awk 'NR>2{print $2}'" % t.path("ta.qcow2")], keep=("rc", "out"))
    t.backing_of("b3 names b", "b3.qcow2")
    t.check("overlay consistent", "b3.qcow2")
    t.check("internal snapshot image consistent", "ta.qcow2")


def scn_transaction_grouped_backups(t):
    t.img("a.qcow2", size="4M", writes=["write -P 0x31 0 4M"])
    t.img("b.qcow2", size="4M", writes=["write -P 0x32 0 1M"])
    t.img("ta.qcow2", size="4M")
    t.img("tb.qcow2", size="4M")
    t.start()
    for n in ("a", "b", "ta", "tb"):
        t.q("blockdev-add", {"driver": "qcow2", "node-name": n,
                             "file": {"driver": "file", "filename": t.path(n + ".qcow2")}})
    backup = lambda s, d, j, **kw: {"type": "blockdev-backup",
                                    "data": dict({"device": s, "target": d, "sync": "full", "job-id": j}, **kw)}
    t.q("transaction", {"actions": [backup("a", "ta", "g1"), backup("b", "tb", "g2")],
                        "properties": {"completion-mode": "grouped"}}, label="grouped backups")
    t.job_states("g1", label="g1 states")
    t.job_states("g2", label="g2 states")
    t.q("transaction", {"actions": [backup("a", "ta", "n1", sync="none"), backup("b", "tb", "n2", sync="none")],
                        "properties": {"completion-mode": "grouped"}}, label="grouped sync=none")
    t.q("job-cancel", {"id": "n1"}, label="cancel one of the group")
    t.job_states("n1", label="n1 states")
    t.job_states("n2", label="n2 states")
    t.q("query-jobs", project=lambda r: r)
    t.stop()
    t.compare("backup a equals a", "a.qcow2", "ta.qcow2")
    t.compare("backup b equals b", "b.qcow2", "tb.qcow2")
