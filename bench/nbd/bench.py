#!/usr/bin/env python3
"""blockd's NBD export against qemu-storage-daemon's, on the same qcow2
image, daemons alternating run by run (median of RUNS):

  nbdcopy read SIZE to null:, 1 and 4 connections (image fully written)
  nbdcopy write SIZE of random data, 1 and 4 connections (fresh image)
  qemu-img bench over nbd+unix, 4 KiB random reads and writes, queue depth 16

usage: bench.py BLOCKD [--size 1G] [--runs 3] [--tls psk]
With --tls psk both daemons serve through tls-creds-psk and nbdcopy
connects with the same pre-shared key (TLS 1.3 with GnuTLS on both ends);
the qemu-img bench rows are left out (qemu-img bench takes no --object).
Prints a markdown table: seconds for each daemon and qsd/blockd (>1: blockd faster).
"""
import argparse, os, shutil, statistics, subprocess, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("blockd")
ap.add_argument("--size", default="1G")
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--tls", choices=["psk"])
a = ap.parse_args()
d = tempfile.mkdtemp(prefix="bench-nbd-")
size_mib = int(a.size[:-1]) * (1024 if a.size.endswith("G") else 1)
src = os.path.join(d, "src.raw")
subprocess.run(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={size_mib}", "status=none"], check=True)


full_img = os.path.join(d, "full.qcow2")
subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", full_img, a.size], check=True)
subprocess.run(["qemu-io", "-c", f"write -P 0x5a 0 {a.size}", full_img], check=True, stdout=subprocess.DEVNULL)


def image(full):
    """A fresh copy of the fully written image, or a fresh empty one."""
    img = os.path.join(d, "a.qcow2")
    if os.path.exists(img):
        os.unlink(img)
    if full:
        shutil.copyfile(full_img, img)
    else:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, a.size], check=True)
    return img


# RFC 7919's ffdhe2048 in PKCS#3 PEM: without a dh-params.pem
# qemu-storage-daemon generates 2048-bit parameters at start (seconds).
FFDHE2048 = """-----BEGIN DH PARAMETERS-----
MIIBDAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAgICAQA=
-----END DH PARAMETERS-----
"""
psk = os.path.join(d, "psk")
if a.tls:
    os.mkdir(psk)
    with open(os.path.join(psk, "keys.psk"), "w") as f:
        f.write("bench:" + os.urandom(32).hex() + "\n")
    with open(os.path.join(psk, "dh-params.pem"), "w") as f:
        f.write(FFDHE2048)


def serve(bin_, img):
    sock = os.path.join(d, "nbd.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    tls = [] if not a.tls else ["--object", f"tls-creds-psk,id=tls0,endpoint=server,dir={psk}"]
    # A private monitor: blockd's default one (/tmp/blockd-UID.sock) may be
    # held by another blockd on the machine.
    mon = ["--chardev", f"socket,id=m,path={d}/qmp.sock,server=on,wait=off", "--monitor", "chardev=m"]
    p = subprocess.Popen([bin_] + mon + tls + ["--blockdev", '{"driver":"qcow2","node-name":"n","file":{"driver":"file","filename":"%s"}}' % img,
                          "--nbd-server", f"addr.type=unix,addr.path={sock}" + (",tls-creds=tls0" if a.tls else ""),
                          "--export", "type=nbd,id=e,node-name=n,name=disk,writable=on"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    if a.tls:
        return p, f"nbds+unix://bench@/disk?socket={sock}&tls-psk-file={psk}/keys.psk"
    return p, f"nbd+unix:///disk?socket={sock}"





def timed(argv):
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


n4k = 50000
span = size_mib * 1024 * 1024 - 4096
rows = [  # name, image full?, argv
    (f"nbdcopy read {a.size}, 1 conn", True, lambda u: ["nbdcopy", "-C", "1", u, "null:"]),
    (f"nbdcopy read {a.size}, 4 conns", True, lambda u: ["nbdcopy", "-C", "4", u, "null:"]),
    (f"nbdcopy write {a.size}, 1 conn", False, lambda u: ["nbdcopy", "-C", "1", "--flush", src, u]),
    (f"nbdcopy write {a.size}, 4 conns", False, lambda u: ["nbdcopy", "-C", "4", "--flush", src, u]),
    (f"qemu-img bench 4 KiB random read ×{n4k}, depth 16", True,
     lambda u: ["qemu-img", "bench", "-f", "raw", "-c", str(n4k), "-d", "16", "-s", "4k", "-S", "397312", u]),
    (f"qemu-img bench 4 KiB random write ×{n4k}, depth 16", True,
     lambda u: ["qemu-img", "bench", "-w", "-f", "raw", "-c", str(n4k), "-d", "16", "-s", "4k", "-S", "397312", u]),
]
if a.tls:
    rows = rows[:4]  # qemu-img bench takes no --object, so no TLS credentials
res = {r[0]: {"qsd": [], "blockd": []} for r in rows}
for _ in range(a.runs):
    for name, full, argv in rows:
        for who, b in (("qsd", "qemu-storage-daemon"), ("blockd", a.blockd)):
            img = image(full)
            p, u = serve(b, img)
            try:
                res[name][who].append(timed(argv(u)))
            finally:
                p.terminate()
                p.wait(30)
print("| benchmark | qemu-storage-daemon s | blockd s | qsd / blockd |")
print("|---|---:|---:|---:|")
for name, _, _ in rows:
    q, b = statistics.median(res[name]["qsd"]), statistics.median(res[name]["blockd"])
    print(f"| {name} | {q:.3f} | {b:.3f} | {q / b:.2f} |")
shutil.rmtree(d)
