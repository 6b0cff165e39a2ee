#!/usr/bin/env python3
"""Copy-job benchmark: blockd vs qemu-storage-daemon on the same images.

Scenarios (DATA of written data in a DATA-sized image, fresh copies per run):
  stream   base.qcow2 (DATA written) <- top.qcow2 (empty): block-stream top
  mirror   src.qcow2 (DATA written) -> new empty qcow2: blockdev-mirror
           sync=full, READY, block-job-complete
  backup   src.qcow2 (DATA written) -> new empty qcow2: blockdev-backup sync=full
  commit   base <- mid (DATA written) <- top: block-commit top-node=mid
Each is timed from the command to BLOCK_JOB_COMPLETED. blockd flushes the
target before it reports completion (stream, commit and mirror also before
their graph change); qemu-storage-daemon's backup leaves the target's
data unflushed. Median of RUNS, interleaved, as a Markdown table.

usage: bench.py BLOCKD_BINARY [--data 1G] [--runs 3] [--only stream,mirror] [--dir DIR]
"""
import argparse, importlib.util, json, os, shutil, statistics, subprocess, sys, tempfile, time

_spec = importlib.util.spec_from_file_location(
    "commitbench", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "commit", "bench.py"))
cb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cb)
sh, QMP = cb.sh, cb.QMP


def make_images(d, data):
    sh("qemu-img", "create", "-q", "-f", "qcow2", f"{d}/base.qcow2", data)
    sh("qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 0 {data}", f"{d}/base.qcow2")
    sh("qemu-img", "create", "-q", "-f", "qcow2", f"{d}/empty.qcow2", data)


def prepare(kind, pristine, d, data):
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    shutil.copyfile(f"{pristine}/base.qcow2", f"{d}/base.qcow2")
    if kind == "stream":
        sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", f"{d}/base.qcow2", "-F", "qcow2", f"{d}/top.qcow2")
    elif kind in ("mirror", "backup"):
        shutil.copyfile(f"{pristine}/empty.qcow2", f"{d}/target.qcow2")
    elif kind == "commit":
        os.rename(f"{d}/base.qcow2", f"{d}/mid.qcow2")
        shutil.copyfile(f"{pristine}/empty.qcow2", f"{d}/base.qcow2")
        sh("qemu-img", "rebase", "-u", "-b", f"{d}/base.qcow2", "-F", "qcow2", f"{d}/mid.qcow2")
        sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", f"{d}/mid.qcow2", "-F", "qcow2", f"{d}/top.qcow2")
    subprocess.run(["sync"])


def run_job(argv0, kind, d):
    sock = f"{d}/qmp.sock"
    p = subprocess.Popen(argv0 + ["--chardev", f"socket,id=m,path={sock},server=on,wait=off",
                                  "--monitor", "chardev=m"], stderr=subprocess.DEVNULL)
    try:
        q = QMP(sock)
        def add(name, path):
            q.cmd("blockdev-add", driver="qcow2", **{"node-name": name},
                  file={"driver": "file", "filename": path})
        if kind in ("stream", "commit"):
            add("top", f"{d}/top.qcow2")
        else:
            add("src", f"{d}/base.qcow2")
            add("tgt", f"{d}/target.qcow2")
        cmds = {
            "stream": ("block-stream", {"job-id": "j", "device": "top"}),
            "commit": ("block-commit", {"job-id": "j", "device": "top", "top": f"{d}/mid.qcow2"}),
            "mirror": ("blockdev-mirror", {"job-id": "j", "device": "src", "target": "tgt", "sync": "full"}),
            "backup": ("blockdev-backup", {"job-id": "j", "device": "src", "target": "tgt", "sync": "full"}),
        }
        name, args = cmds[kind]
        start = time.perf_counter()
        q.f.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        q.f.flush()
        if kind == "mirror":
            q.wait("BLOCK_JOB_READY")
            q.f.write(json.dumps({"execute": "block-job-complete", "arguments": {"device": "j"}}).encode() + b"\n")
            q.f.flush()
        ev = q.wait("BLOCK_JOB_COMPLETED")
        took = time.perf_counter() - start
        if "error" in ev["data"]:
            raise RuntimeError(ev["data"]["error"])
        q.cmd("quit")
    finally:
        p.wait(60)
    return took


def verify(kind, d):
    imgs = {"stream": ["top"], "commit": ["base"], "mirror": ["target"], "backup": ["target"]}[kind]
    for i in imgs:
        if subprocess.run(["qemu-img", "check", "-q", f"{d}/{i}.qcow2"]).returncode != 0:
            raise RuntimeError(f"{i}.qcow2 failed qemu-img check after {kind}")
    want = f"{d}/base.qcow2" if kind != "commit" else f"{d}/mid.qcow2"
    got = f"{d}/{imgs[0]}.qcow2"
    if kind != "commit" and subprocess.run(["qemu-img", "compare", "-q", got, want]).returncode != 0:
        raise RuntimeError(f"{kind}: {got} differs from {want}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("blockd")
    ap.add_argument("--data", default="1G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="stream,mirror,backup,commit")
    ap.add_argument("--dir")
    a = ap.parse_args()
    root = a.dir or tempfile.mkdtemp(prefix="copyjobs-bench-")
    pristine = f"{root}/pristine"
    os.makedirs(pristine, exist_ok=True)
    make_images(pristine, a.data)
    kinds = a.only.split(",")
    daemons = {"blockd": [a.blockd], "qemu-storage-daemon": ["qemu-storage-daemon"]}
    times = {(k, n): [] for k in kinds for n in daemons}
    for _ in range(a.runs):
        for k in kinds:
            for n, argv0 in daemons.items():  # interleaved, so drift hits both alike
                d = f"{root}/run"
                prepare(k, pristine, d, a.data)
                times[(k, n)].append(run_job(argv0, k, d))
                verify(k, d)
    print(f"Copy jobs on {a.data} of data, median of {a.runs} runs (command to BLOCK_JOB_COMPLETED)\n")
    print("| job | blockd (s) | qemu-storage-daemon (s) | QSD time / blockd's |")
    print("|---|---|---|---|")
    for k in kinds:
        b = statistics.median(times[(k, "blockd")])
        q = statistics.median(times[(k, "qemu-storage-daemon")])
        print(f"| {k} | {b:.2f} | {q:.2f} | {q / b:.2f}x |")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
