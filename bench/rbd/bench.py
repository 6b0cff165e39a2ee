#!/usr/bin/env python3
"""blockd against qemu-storage-daemon serving the same rbd image over NBD,
on the throw-away cluster of tests/ceph (memstore OSD, capped at 1 GiB),
daemons alternating run by run in ABBA order (median of RUNS):

  nbdcopy write SIZE of random data into the image (1 connection)
  nbdcopy read SIZE from the image to null: (1 connection)

usage: bench.py BLOCKD CEPH_CONF [--size 256M] [--runs 3]
Prints a markdown table: seconds for each daemon and qsd/blockd (>1: blockd faster),
wall-clock and the daemon's own CPU time (user + system) during the copy.
"""
import argparse, os, shutil, statistics, subprocess, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("blockd")
ap.add_argument("conf")
ap.add_argument("--size", default="256M")
ap.add_argument("--runs", type=int, default=3)
a = ap.parse_args()
# The source file lives in /dev/shm where there is one: a tmpfs without
# swap is never paged out, whereas a file on disk can be (proactive
# reclaim such as DAMON's pageout), and a write run then reads its
# source from disk, slowing whichever daemon it falls on.
d = tempfile.mkdtemp(prefix="bench-rbd-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
size_mib = int(a.size[:-1]) * (1024 if a.size.endswith("G") else 1)
src = os.path.join(d, "src.raw")
subprocess.run(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={size_mib}", "status=none"], check=True)
img = f"bench-{os.getpid()}"


def rbd(*args):
    subprocess.run(["rbd", "-c", a.conf, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fresh_image():
    # A new image each time: memstore holds every written byte in the
    # OSD's memory, and the writes then allocate, as on a fresh volume.
    subprocess.run(["rbd", "-c", a.conf, "rm", "--no-progress", f"rbd/{img}"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rbd("create", "--size", f"{size_mib}M", f"rbd/{img}")


def serve(bin_):
    sock = os.path.join(d, "nbd.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    node = '{"driver":"rbd","node-name":"n","pool":"rbd","image":"%s","conf":"%s"}' % (img, a.conf)
    # A monitor of its own: blockd's default QMP socket may be taken.
    mon = ["--chardev", f"socket,id=m,path={d}/qmp.sock,server=on,wait=off", "--monitor", "chardev=m"]
    if os.path.exists(f"{d}/qmp.sock"):
        os.unlink(f"{d}/qmp.sock")
    p = subprocess.Popen([bin_, *mon, "--blockdev", node, "--nbd-server", f"addr.type=unix,addr.path={sock}",
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


def cpu(p):
    """User and system CPU seconds the daemon has used so far."""
    f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def stop(p):
    p.terminate()  # both close the image: the cache is flushed, the lock released
    p.wait(60)


results = {"blockd": {}, "qsd": {}}
try:
    for run in range(a.runs):
        daemons = [("blockd", a.blockd), ("qsd", "qemu-storage-daemon")]
        # ABBA order: a cluster that drifts during the set (memstore
        # filling, background deletes) weighs on both alike.
        for name, bin_ in daemons if run % 2 == 0 else daemons[::-1]:
            fresh_image()
            p, uri = serve(bin_)
            try:
                # --flush: the time includes making the data durable.
                c0 = cpu(p)
                w = timed(["nbdcopy", "--flush", "-C", "1", src, uri])
                c1 = cpu(p)
                r = timed(["nbdcopy", "-C", "1", uri, "null:"])
                c2 = cpu(p)
            finally:
                stop(p)
            results[name].setdefault("write", []).append(w)
            results[name].setdefault("read", []).append(r)
            results[name].setdefault("write cpu", []).append(c1 - c0)
            results[name].setdefault("read cpu", []).append(c2 - c1)
finally:
    shutil.rmtree(d)
    subprocess.run(["rbd", "-c", a.conf, "rm", "--no-progress", f"rbd/{img}"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

print(f"| nbdcopy over NBD, rbd image, {a.size} | blockd s | qsd s | qsd/blockd |")
print("|---|---|---|---|")
for op in ["write", "read", "write cpu", "read cpu"]:
    b = statistics.median(results["blockd"][op])
    q = statistics.median(results["qsd"][op])
    print(f"| {op} | {b:.2f} | {q:.2f} | {q / b:.2f}x |")
