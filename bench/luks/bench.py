#!/usr/bin/env python3
"""blockd's luks driver against qemu-storage-daemon's: both daemons open
the same LUKS1 image (aes-256-xts-plain64, made by qemu-img) with the
same secret and export the luks node over NBD. Daemons alternate run by
run (median of RUNS):

  nbdcopy read SIZE to null:, 4 connections (every byte decrypted)
  nbdcopy write SIZE of random data, 4 connections, flushed (encrypted)

usage: bench.py BLOCKD [--size 512M] [--runs 3]
Prints a markdown table: seconds for each daemon and qsd/blockd (>1: blockd faster).
"""
import argparse, os, signal, statistics, subprocess, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("blockd")
ap.add_argument("--size", default="512M")
ap.add_argument("--runs", type=int, default=3)
a = ap.parse_args()
d = tempfile.mkdtemp(prefix="bench-luks-")
size_mib = int(a.size[:-1]) * (1024 if a.size.endswith("G") else 1)
src = os.path.join(d, "src.raw")
subprocess.run(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={size_mib}", "status=none"], check=True)
img = os.path.join(d, "a.luks")
sec = "secret,id=s0,data=bench"
for _ in range(5):
    if subprocess.run(["qemu-img", "create", "-q", "--object", sec, "-f", "luks", "-o", "key-secret=s0,iter-time=10",
                       img, a.size]).returncode == 0:
        break
subprocess.run(["qemu-img", "convert", "-n", "--object", sec, "-f", "raw", src, "--target-image-opts",
                f"driver=luks,key-secret=s0,file.filename={img}"], check=True)


def serve(bin_):
    sock = os.path.join(d, "nbd.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    node = '{"driver":"luks","node-name":"n","key-secret":"s0","file":{"driver":"file","filename":"%s"}}' % img
    # An explicit monitor socket: blockd's default one may be another's.
    mon = ["--chardev", f"socket,id=m,path={os.path.join(d, 'qmp.sock')},server=on,wait=off", "--monitor", "chardev=m"]
    p = subprocess.Popen([bin_] + mon + ["--object", sec, "--blockdev", node, "--nbd-server", f"addr.type=unix,addr.path={sock}",
                          "--export", "type=nbd,id=e,node-name=n,name=disk,writable=on"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    return p, f"nbd+unix:///disk?socket={sock}"


def timed(argv):
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


tests = {
    f"nbdcopy read {a.size} of a luks node, 4 connections": lambda uri: ["nbdcopy", "-C", "4", uri, "null:"],
    f"nbdcopy write {a.size} to a luks node, 4 connections": lambda uri: ["nbdcopy", "-C", "4", "--flush", src, uri],
}
res = {k: {"qemu-storage-daemon": [], "blockd": []} for k in tests}
for r in range(a.runs):
    for name, argv in tests.items():
        for who, bin_ in (("qemu-storage-daemon", "qemu-storage-daemon"), ("blockd", a.blockd)):
            p, uri = serve(bin_)
            try:
                res[name][who].append(timed(argv(uri)))
            finally:
                p.send_signal(signal.SIGTERM)
                p.wait()
print("| test | qemu-storage-daemon s | blockd s | qsd/blockd |")
print("|---|---|---|---|")
for name, v in res.items():
    q, b = statistics.median(v["qemu-storage-daemon"]), statistics.median(v["blockd"])
    print(f"| {name} | {q:.3f} | {b:.3f} | {q / b:.2f} |")
subprocess.run(["rm", "-rf", d])
