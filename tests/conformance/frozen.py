"""Frozen backing links for ../shared/conformance/conform.py, run side by
side on qemu-storage-daemon and blockd: while a commit runs, the links
from its filter down to base refuse every change, and they are free again
once the job has ended.

  python3 ../shared/conformance/conform.py --compare --bin /tmp/blockd tests/conformance/frozen.py
"""


def _chain(t, mid_data):
    t.img("base.qcow2", size="16M", writes=["write -P 0x11 0 4M"])
    t.img("mid.qcow2", backing="base.qcow2", writes=[mid_data])
    t.img("top.qcow2", backing="mid.qcow2")
    t.img("other.qcow2", size="16M")


def _add(t):
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "base",
                         "file": {"driver": "file", "node-name": "fbase", "filename": t.path("base.qcow2")}})
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "mid", "backing": "base",
                         "file": {"driver": "file", "node-name": "fmid", "filename": t.path("mid.qcow2")}})
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "top", "backing": "mid",
                         "file": {"driver": "file", "node-name": "ftop", "filename": t.path("top.qcow2")}})
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "other", "backing": None,
                         "file": {"driver": "file", "node-name": "fother", "filename": t.path("other.qcow2")}})


def _reopen(t, node, backing, label):
    t.q("blockdev-reopen", {"options": [{"driver": "qcow2", "node-name": node, "file": "f" + node,
                                         "backing": backing}]}, label=label)


def _refusals(t, top_link):
    if top_link:
        _reopen(t, "top", None, "top backing null")
        _reopen(t, "top", "other", "top backing other")
    _reopen(t, "mid", None, "mid backing null")
    _reopen(t, "mid", "other", "mid backing other")
    t.q("blockdev-reopen", {"options": [
        {"driver": "qcow2", "node-name": "other", "file": "fother", "backing": "base"},
        {"driver": "qcow2", "node-name": "mid", "file": "fmid", "backing": None}]}, label="list with a frozen link")
    t.q("blockdev-snapshot", {"node": "mid", "overlay": "other"}, label="snapshot of mid")
    t.q("blockdev-del", {"node-name": "mid"}, label="del mid")
    t.q("blockdev-del", {"node-name": "flt"}, label="del filter")


def scn_frozen_active_commit(t):
    _chain(t, "write -P 0x22 0 1M")
    t.start()
    _add(t)
    t.q("block-commit", {"job-id": "j", "device": "top", "filter-node-name": "flt"})
    t.ev("BLOCK_JOB_READY", keys=("device", "type"))
    _refusals(t, top_link=True)
    t.graph("graph while the job runs")
    t.q("block-job-cancel", {"device": "j"})
    t.ev("BLOCK_JOB_COMPLETED", keys=("device", "type", "error"))
    t.q("blockdev-reopen", {"options": [{"driver": "qcow2", "node-name": "mid", "file": "fmid",
                                         "read-only": True, "backing": None}]}, label="mid free after the job")
    t.nodes("nodes after")
    t.stop()
    t.check("base consistent", "base.qcow2")


def scn_frozen_intermediate_commit(t):
    _chain(t, "write -P 0x22 0 16M")
    t.start()
    _add(t)
    t.q("block-commit", {"job-id": "j", "device": "top", "top-node": "mid", "speed": 1024})
    _refusals(t, top_link=False)
    t.q("block-job-cancel", {"device": "j"})
    t.job_states("j", final=("null",))
    t.q("blockdev-reopen", {"options": [{"driver": "qcow2", "node-name": "mid", "file": "fmid",
                                         "read-only": True, "backing": None}]}, label="mid free after the job")
    t.nodes("nodes after")
    t.stop()
    t.check("base consistent", "base.qcow2")
    t.backing_of("top backing unchanged", "top.qcow2")
