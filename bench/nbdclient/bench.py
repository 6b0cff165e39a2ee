#!/usr/bin/env python3
"""blockd's nbd block driver (client) against qemu-storage-daemon's: a
qemu-nbd serves a raw image; each daemon opens it as an nbd node and
re-exports that node over its own NBD server, so every byte crosses the
daemon's nbd client. Daemons alternate run by run (median of RUNS):

  nbdcopy read SIZE to null:, 4 connections
  nbdcopy write SIZE of random data, 4 connections, flushed
  qemu-img bench, 4 KiB random reads, queue depth 16

usage: bench.py BLOCKD [--size 512M] [--runs 3]
Prints a markdown table: seconds for each daemon and qsd/blockd (>1: blockd faster).
"""
import argparse, os, signal, statistics, subprocess, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("blockd")
ap.add_argument("--size", default="512M")
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--only", default="", help="run only the tests whose name contains this")
a = ap.parse_args()
d = tempfile.mkdtemp(prefix="bench-nbdclient-")
size_mib = int(a.size[:-1]) * (1024 if a.size.endswith("G") else 1)
src = os.path.join(d, "src.raw")
subprocess.run(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={size_mib}", "status=none"], check=True)
img = os.path.join(d, "base.raw")
subprocess.run(["cp", src, img], check=True)
base_sock = os.path.join(d, "base.sock")
qnbd = subprocess.Popen(["qemu-nbd", "-t", "-e", "16", "-k", base_sock, "-x", "base", "-f", "raw",
                         "--cache=writeback", img], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_sock(p):
    for _ in range(400):
        if os.path.exists(p):
            return
        time.sleep(0.05)
    raise SystemExit(f"no socket {p}")


wait_sock(base_sock)


def serve(bin_):
    sock = os.path.join(d, "nbd.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    node = '{"driver":"nbd","node-name":"n","export":"base","server":{"type":"unix","path":"%s"}}' % base_sock
    # An explicit monitor socket: blockd's default one may be another's.
    mon = ["--chardev", f"socket,id=m,path={os.path.join(d, 'qmp.sock')},server=on,wait=off", "--monitor", "chardev=m"]
    p = subprocess.Popen([bin_] + mon + ["--blockdev", node, "--nbd-server", f"addr.type=unix,addr.path={sock}",
                          "--export", "type=nbd,id=e,node-name=n,name=disk,writable=on"],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "daemon.log"), "a"))
    try:
        wait_sock(sock)
    except SystemExit:
        p.kill()
        raise SystemExit(f"{bin_} did not start: " + open(os.path.join(d, "daemon.log")).read())
    return p, f"nbd+unix:///disk?socket={sock}"


def timed(argv):
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


tests = {
    f"nbdcopy read {a.size}, 4 connections, through the nbd client":
        lambda uri: ["nbdcopy", "-C", "4", uri, "null:"],
    f"nbdcopy write {a.size}, 4 connections, through the nbd client":
        lambda uri: ["nbdcopy", "-C", "4", "--flush", src, uri],
    "qemu-img bench 4 KiB random reads, depth 16, through the nbd client":
        lambda uri: ["qemu-img", "bench", "-f", "raw", "-c", "100000", "-d", "16", "-s", "4k", "-S", "1M", uri],
}
res = {k: {"qemu-storage-daemon": [], "blockd": []} for k in tests}
tests = {k: v for k, v in tests.items() if a.only in k}
res = {k: res[k] for k in tests}
for r in range(a.runs):
    for name, argv in tests.items():
        for who, bin_ in (("qemu-storage-daemon", "qemu-storage-daemon"), ("blockd", a.blockd)):
            p, uri = serve(bin_)
            try:
                res[name][who].append(timed(argv(uri)))
            finally:
                p.send_signal(signal.SIGTERM)
                p.wait()
qnbd.send_signal(signal.SIGTERM)
qnbd.wait()
print("| test | qemu-storage-daemon s | blockd s | qsd/blockd |")
print("|---|---|---|---|")
for name, v in res.items():
    q, b = statistics.median(v["qemu-storage-daemon"]), statistics.median(v["blockd"])
    print(f"| {name} | {q:.3f} | {b:.3f} | {q / b:.2f} |")
subprocess.run(["rm", "-rf", d])
