#!/usr/bin/env python3
"""Commit benchmark: blockd vs qemu-storage-daemon vs qemu-img commit.

Each run commits the same intermediate layer (DATA of allocated data) into
the same base (BASE virtual size) on fresh copies of one set of images:
  base.qcow2 (BASE, BASE_DATA written, 256M by default) <- mid.qcow2 (DATA written) <- top.qcow2
block-commit top-node=mid base-node=base is timed from the command to
BLOCK_JOB_COMPLETED; qemu-img commit -d mid.qcow2 is timed as a process.
Prints the median of RUNS per tool, and ratios, as a Markdown table.

usage: bench.py BLOCKD_BINARY [--data 1G] [--base 2G] [--base-data 256M] [--runs 5] [--dir DIR]
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time


def sh(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def make_images(d, data, base, base_data):
    sh("qemu-img", "create", "-q", "-f", "qcow2", f"{d}/base.qcow2", base)
    sh("qemu-io", "-f", "qcow2", "-c", f"write -P 0x11 0 {base_data}", f"{d}/base.qcow2")
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", f"{d}/base.qcow2", "-F", "qcow2", f"{d}/mid.qcow2")
    sh("qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 0 {data}", f"{d}/mid.qcow2")
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", f"{d}/mid.qcow2", "-F", "qcow2", f"{d}/top.qcow2")


def fresh_copy(src, dst):
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.makedirs(dst)
    for n in ("base.qcow2", "mid.qcow2", "top.qcow2"):
        shutil.copyfile(f"{src}/{n}", f"{dst}/{n}")
    # The copies keep the original absolute backing names; rebase them.
    sh("qemu-img", "rebase", "-u", "-b", f"{dst}/base.qcow2", "-F", "qcow2", f"{dst}/mid.qcow2")
    sh("qemu-img", "rebase", "-u", "-b", f"{dst}/mid.qcow2", "-F", "qcow2", f"{dst}/top.qcow2")
    subprocess.run(["sync"])


class QMP:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        for _ in range(500):
            try:
                self.s.connect(path)
                break
            except OSError:
                time.sleep(0.01)
        self.f = self.s.makefile("rwb")
        self.read()
        self.cmd("qmp_capabilities")

    def read(self):
        return json.loads(self.f.readline())

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.f.flush()
        while True:
            m = self.read()
            if "event" in m:
                continue
            if "error" in m:
                raise RuntimeError(f"{name}: {m['error']}")
            return m

    def wait(self, event):
        while True:
            m = self.read()
            if m.get("event") == event:
                return m


def daemon_commit(argv0, d):
    sock = f"{d}/qmp.sock"
    p = subprocess.Popen(argv0 + ["--chardev", f"socket,id=m,path={sock},server=on,wait=off",
                                  "--monitor", "chardev=m"], stderr=subprocess.DEVNULL)
    try:
        q = QMP(sock)
        q.cmd("blockdev-add", driver="qcow2", **{"node-name": "top"},
              file={"driver": "file", "filename": f"{d}/top.qcow2"})
        start = time.perf_counter()
        q.f.write(json.dumps({"execute": "block-commit", "arguments": {
            "job-id": "j", "device": "top", "top": f"{d}/mid.qcow2"}}).encode() + b"\n")
        q.f.flush()
        ev = q.wait("BLOCK_JOB_COMPLETED")
        took = time.perf_counter() - start
        if "error" in ev["data"]:
            raise RuntimeError(ev["data"]["error"])
        q.cmd("quit")
    finally:
        p.wait(30)
    return took


def qemu_img_commit(d):
    start = time.perf_counter()
    sh("qemu-img", "commit", "-q", "-d", "-f", "qcow2", f"{d}/mid.qcow2")
    return time.perf_counter() - start


def verify(d):
    r = subprocess.run(["qemu-img", "check", "-q", f"{d}/base.qcow2"])
    if r.returncode != 0:
        raise RuntimeError("base.qcow2 failed qemu-img check after commit")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("blockd")
    ap.add_argument("--data", default="1G")
    ap.add_argument("--base", default="2G")
    ap.add_argument("--base-data", default="256M")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir")
    a = ap.parse_args()
    root = a.dir or tempfile.mkdtemp(prefix="commit-bench-")
    pristine = f"{root}/pristine"
    os.makedirs(pristine, exist_ok=True)
    make_images(pristine, a.data, a.base, a.base_data)
    tools = {
        "blockd block-commit": lambda d: daemon_commit([a.blockd], d),
        "qemu-storage-daemon block-commit": lambda d: daemon_commit(["qemu-storage-daemon"], d),
        "qemu-img commit": qemu_img_commit,
    }
    times = {k: [] for k in tools}
    for i in range(a.runs):
        for name, run in tools.items():  # interleaved, so drift hits all alike
            d = f"{root}/run"
            fresh_copy(pristine, d)
            times[name].append(run(d))
            verify(d)
    med = {k: statistics.median(v) for k, v in times.items()}
    b = med["blockd block-commit"]
    print(f"Commit of {a.data} of data into a {a.base} base, median of {a.runs} runs\n")
    print("| tool | median (s) | runs (s) | time / blockd's |")
    print("|---|---|---|---|")
    for k in tools:
        runs = ", ".join(f"{x:.2f}" for x in times[k])
        print(f"| {k} | {med[k]:.2f} | {runs} | {med[k] / b:.2f}x |")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
