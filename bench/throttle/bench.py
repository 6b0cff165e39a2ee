#!/usr/bin/env python3
"""Throttle benchmark: the rate a throttle filter lets through, against its
limit, for blockd and qemu-storage-daemon in the same run.

Each daemon serves raw <- throttle <- file over NBD (one export), the
throttle node a member of a throttle-group created with --object. A client
then moves a fixed amount of data through the export and the achieved
rate is amount / elapsed time:

  bps-total   nbdcopy writes (and reads) SIZE in 64 KiB requests, 1 connection
  iops-total  qemu-img bench: COUNT 4 KiB reads, queue depth 8
  bps-total with a burst: bps-total-max for bps-total-max-length seconds,
              then bps-total (SIZE chosen to last a few seconds beyond it)

The expected rate counts what the limit lets through at once (a tenth of a
second of I/O, or the burst) over the whole run, so "achieved / limit"
near 1.00 means the limit holds.

usage: bench.py BLOCKD [--runs 3]
"""
import argparse, os, shutil, statistics, subprocess, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("blockd")
ap.add_argument("--runs", type=int, default=3)
a = ap.parse_args()
d = tempfile.mkdtemp(prefix="bench-throttle-")
MiB = 1 << 20


def serve(bin_, img, limits):
    sock = os.path.join(d, "nbd.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    obj = "throttle-group,id=tg," + ",".join(f"limits.{k}={v}" for k, v in limits.items())
    node = ('{"driver":"raw","node-name":"n","file":{"driver":"throttle","throttle-group":"tg",'
            '"file":{"driver":"file","filename":"%s"}}}' % img)
    p = subprocess.Popen([bin_, "--object", obj, "--blockdev", node,
                          "--nbd-server", f"addr.type=unix,addr.path={sock}",
                          "--export", "type=nbd,id=e,node-name=n,name=disk,writable=on"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(200):
        if os.path.exists(sock):
            break
        if p.poll() is not None:
            raise SystemExit(f"{bin_} failed: {p.stderr.read().decode()}")
        time.sleep(0.05)
    return p, f"nbd+unix:///disk?socket={sock}"


def timed(argv):
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


img = os.path.join(d, "disk.img")
src = os.path.join(d, "src.raw")
subprocess.run(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", "count=24", "status=none"], check=True)
subprocess.run(["cp", src, img], check=True)

rows = [  # name, limits, work (units), unit, argv, allowance at once (units), limit (units/s)
    ("bps-total 4 MiB/s: nbdcopy write 16 MiB, 64 KiB requests", {"bps-total": 4 * MiB}, 16 * MiB, "MiB/s",
     lambda u: ["nbdcopy", "-C", "1", "--request-size=65536", "--requests=4", "--flush",
                os.path.join(d, "src16.raw"), u], 4 * MiB / 10, 4 * MiB),
    ("bps-read 4 MiB/s: nbdcopy read 24 MiB, 64 KiB requests", {"bps-read": 4 * MiB}, 24 * MiB, "MiB/s",
     lambda u: ["nbdcopy", "-C", "1", "--request-size=65536", "--requests=4", "--no-extents",
                u, "null:"], 4 * MiB / 10, 4 * MiB),
    ("iops-total 250/s: qemu-img bench 1000 4 KiB reads, depth 8", {"iops-total": 250}, 1000, "IOPS",
     lambda u: ["qemu-img", "bench", "-f", "raw", "-c", "1000", "-d", "8", "-s", "4k", "-S", "65536", u], 25, 250),
    ("iops-total 250/s, iops-size 4 KiB: 250 64 KiB reads (16 I/Os each)", {"iops-total": 250, "iops-size": 4096},
     4000, "IOPS", lambda u: ["qemu-img", "bench", "-f", "raw", "-c", "250", "-d", "4", "-s", "64k", "-S", "65536", u],
     25, 250),
    ("bps-total 2 MiB/s, burst 8 MiB/s for 1 s: write 16 MiB",
     {"bps-total": 2 * MiB, "bps-total-max": 8 * MiB, "bps-total-max-length": 1}, 16 * MiB, "MiB/s",
     lambda u: ["nbdcopy", "-C", "1", "--request-size=65536", "--requests=4", "--flush",
                os.path.join(d, "src16.raw"), u], 8 * MiB, 2 * MiB),
]
subprocess.run(["dd", f"if={src}", f"of={os.path.join(d, 'src16.raw')}", "bs=1M", "count=16", "status=none"],
               check=True)

res = {r[0]: {"qsd": [], "blockd": []} for r in rows}
for _ in range(a.runs):
    for name, limits, work, unit, argv, at_once, limit in rows:
        for who, b in (("qsd", "qemu-storage-daemon"), ("blockd", a.blockd)):
            p, u = serve(b, img, limits)
            try:
                res[name][who].append(timed(argv(u)))
            finally:
                p.terminate()
                p.wait(30)


def fmt(v, unit):
    return f"{v / MiB:.2f}" if unit == "MiB/s" else f"{v:.0f}"


print("| limit and load | limit | expected rate | qsd rate | blockd rate | blockd / expected | blockd / qsd |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name, limits, work, unit, argv, at_once, limit in rows:
    q, b = statistics.median(res[name]["qsd"]), statistics.median(res[name]["blockd"])
    # What the limit allows: the part let through at once, the rest at
    # the average rate.
    expected = work / ((work - at_once) / limit)
    print(f"| {name} | {fmt(limit, unit)} {unit} | {fmt(expected, unit)} | {fmt(work / q, unit)} | "
          f"{fmt(work / b, unit)} | {work / b / expected:.2f} | {q / b:.2f} |")
shutil.rmtree(d)
