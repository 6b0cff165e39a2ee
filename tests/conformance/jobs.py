"""Job scenarios for ../shared/conformance/conform.py, run side by side on
qemu-storage-daemon and blockd:

  python3 ../shared/conformance/conform.py --compare --bin /tmp/blockd tests/conformance/jobs.py
"""


def _chain(t, data_mid="write -P 0x22 2M 4M", size="16M"):
    t.img("base.qcow2", size=size, writes=["write -P 0x11 0 4M"])
    t.img("mid.qcow2", backing="base.qcow2", writes=[data_mid])
    t.img("top.qcow2", backing="mid.qcow2", writes=["write -P 0x33 6M 1M"])
    t.sh("reference image", ["qemu-img", "convert", "-O", "raw", t.path("top.qcow2"), t.path("expect.raw")])


def _add_top(t):
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "top",
                         "file": {"driver": "file", "filename": t.path("top.qcow2")}})


def scn_commit_active(t):
    _chain(t)
    t.start()
    _add_top(t)
    t.q("block-commit", {"job-id": "j1", "device": "top"})
    t.ev("BLOCK_JOB_READY", keys=("device", "type", "len", "offset"))
    t.graph("graph while ready")
    t.q("query-block-jobs", project=lambda r: [(j["device"], j["status"], j["ready"], j["len"]) for j in r])
    t.q("block-job-complete", {"device": "j1"})
    t.job_states("j1")
    t.nodes("nodes after")
    t.graph("graph after")
    t.stop()
    t.compare("data preserved", "base.qcow2", "expect.raw")
    t.check("base consistent", "base.qcow2")


def scn_commit_cancel_before_ready(t):
    _chain(t, data_mid="write -P 0x22 0 12M")
    t.start()
    _add_top(t)
    t.q("block-commit", {"job-id": "j1", "device": "top", "speed": 4096})
    t.q("block-job-cancel", {"device": "j1"})
    t.job_states("j1", final=("null",))
    t.graph("graph after cancel")
    t.stop()
    t.compare("data preserved", "top.qcow2", "expect.raw")
    t.check("base consistent", "base.qcow2")
    t.backing_of("top backing unchanged", "top.qcow2")


def scn_commit_cancel_after_ready(t):
    _chain(t)
    t.start()
    _add_top(t)
    t.q("block-commit", {"job-id": "j1", "device": "top"})
    t.ev("BLOCK_JOB_READY", keys=("device", "type"))
    t.q("block-job-cancel", {"device": "j1"})
    t.ev("BLOCK_JOB_COMPLETED", keys=("device", "type", "error"))
    t.nodes("nodes after soft cancel")
    t.stop()
    t.compare("top still the active image", "top.qcow2", "expect.raw")
    t.check("base consistent", "base.qcow2")


def scn_commit_finalize_dismiss(t):
    _chain(t)
    t.start()
    _add_top(t)
    t.q("block-commit", {"job-id": "j1", "device": "top", "top": t.path("mid.qcow2"),
                         "auto-finalize": False, "auto-dismiss": False})
    t.ev("BLOCK_JOB_PENDING", keys=("id", "type"))
    t.q("query-jobs", project=lambda r: [(j["id"], j["status"]) for j in r])
    t.q("job-dismiss", {"id": "j1"}, label="dismiss too early")
    t.q("job-finalize", {"id": "j1"})
    t.q("query-jobs", project=lambda r: [(j["id"], j["status"], j.get("error")) for j in r])
    t.q("job-dismiss", {"id": "j1"})
    t.q("job-dismiss", {"id": "j1"}, label="dismiss twice")
    t.stop()
    t.backing_of("top backing after commit", "top.qcow2")
    t.compare("data preserved", "top.qcow2", "expect.raw")
    t.check("base consistent", "base.qcow2")


def scn_commit_pause_resume(t):
    _chain(t, data_mid="write -P 0x22 0 12M")
    t.start()
    _add_top(t)
    t.q("block-commit", {"job-id": "j1", "device": "top", "top": t.path("mid.qcow2"), "speed": 65536})
    t.q("block-job-pause", {"device": "j1"})
    t.q("block-job-pause", {"device": "j1"}, label="pause twice")
    # The job is paused when it reaches a pause point: right after the
    # command it may still be running (both daemons), so wait for it.
    t.ev("JOB_STATUS_CHANGE", keys=("id", "status"), label="paused",
         match=lambda e: e["data"].get("status") == "paused")
    t.q("query-jobs", project=lambda r: [(j["id"], j["status"]) for j in r])
    t.q("block-job-resume", {"device": "j1"})
    t.q("block-job-resume", {"device": "j1"}, label="resume twice")
    t.q("block-job-set-speed", {"device": "j1", "speed": -1}, label="negative speed")
    t.q("block-job-set-speed", {"device": "j1", "speed": 0})
    t.job_states("j1")
    t.stop()
    t.compare("data preserved", "top.qcow2", "expect.raw")
    t.check("base consistent", "base.qcow2")


def scn_commit_refusals(t):
    _chain(t)
    t.img("other.qcow2")
    t.start()
    _add_top(t)
    t.q("blockdev-add", {"driver": "qcow2", "node-name": "other",
                         "file": {"driver": "file", "filename": t.path("other.qcow2")}})
    t.learn_names()
    t.q("block-commit", {"device": "nope"})
    t.q("block-commit", {"device": "top"}, label="no job id")
    t.q("block-commit", {"job-id": "1bad", "device": "top"})
    t.q("block-commit", {"job-id": "j", "device": "top", "top-node": "nope"})
    t.q("block-commit", {"job-id": "j", "device": "top", "base-node": "other"})
    t.q("block-commit", {"job-id": "j", "device": "top", "top-node": "other"})
    t.q("block-commit", {"job-id": "j", "device": "other"}, label="into itself")
    t.q("block-commit", {"job-id": "j", "device": "top", "top": t.path("nope.qcow2")})
    t.q("block-commit", {"job-id": "j", "device": "top", "base": t.path("nope.qcow2")})
    t.q("block-commit", {"job-id": "j", "device": "top", "backing-file": "x"}, label="backing-file on active")
    t.q("block-commit", {"job-id": "j", "device": "top", "speed": -5}, label="negative speed")
    t.q("block-commit", {"job-id": "j", "device": "top", "top": t.path("mid.qcow2"), "speed": 1})
    t.q("block-commit", {"job-id": "j", "device": "other"}, label="duplicate id")
    t.q("block-commit", {"job-id": "k", "device": "top"}, label="device held by a job")
    t.q("blockdev-del", {"node-name": "top"}, label="del while a job holds it")
    t.q("block-job-complete", {"device": "j"}, label="complete an intermediate commit")
    t.q("block-job-cancel", {"device": "j"})
    t.job_states("j")
