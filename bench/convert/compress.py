#!/usr/bin/env python3
"""Compressed convert benchmark: blockd img convert -c vs qemu-img convert -c.

The source is a raw image of SIZE (512 MiB by default) whose first half
holds the bytes of a tar stream of /usr/share and /usr/lib (a mix of
text, binaries and already compressed files) and whose second half is a
hole. Each run converts it with -c to qcow2, once with zlib and once with
compression_type=zstd, with both tools alternating which goes first;
`sync` runs before each conversion. Every output is checked with
qemu-img compare and qemu-img check. Prints, per compression type, the
median time of RUNS per tool, the ratio qemu-img time / blockd time
(> 1: blockd is faster) and the output sizes, as a Markdown table.

usage: compress.py BLOCKD_BINARY [--size 512M] [--runs 5] [--dir DIR]
"""
import argparse, os, shutil, statistics, subprocess, tempfile, time


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1].upper()] if s[-1].upper() in mult else int(s)


def make_source(d, size):
    raw = f"{d}/src.raw"
    with open(raw, "wb") as f:
        tar = subprocess.Popen(["tar", "cf", "-", "/usr/share", "/usr/lib"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        left = size // 2
        while left > 0:
            b = tar.stdout.read(min(left, 1 << 20))
            if not b:
                break
            f.write(b)
            left -= len(b)
        tar.kill()
        tar.wait()
        f.truncate(size)
    subprocess.run(["cat", raw], stdout=subprocess.DEVNULL, check=True)  # page cache
    return raw


def convert(argv0, src, ctype, out):
    subprocess.run(["sync"])
    t0 = time.perf_counter()
    subprocess.run(argv0 + ["convert", "-c", "-f", "raw", "-O", "qcow2", "-o",
                            f"compression_type={ctype}", src, out], check=True)
    t = time.perf_counter() - t0
    if subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", src, out]).returncode != 0:
        raise SystemExit(f"{argv0[0]}: {ctype} output differs from the source")
    if subprocess.run(["qemu-img", "check", "-q", out]).returncode != 0:
        raise SystemExit(f"{argv0[0]}: {ctype} output fails qemu-img check")
    size = os.path.getsize(out)
    os.unlink(out)
    return t, size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("blockd")
    ap.add_argument("--size", default="512M")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="bench-convert-c-", dir=a.dir)
    try:
        src = make_source(d, parse_size(a.size))
        tools = {"qemu-img": ["qemu-img"], "blockd": [a.blockd, "img"]}
        print(f"| convert -c ({a.size} raw, half data) | qemu-img s, median (min) | blockd s, median (min) "
              f"| qemu-img / blockd | output MiB qemu-img / blockd |")
        print("|---|---:|---:|---:|---:|")
        for ctype in ("zlib", "zstd"):
            times = {k: [] for k in tools}
            sizes = {}
            for i in range(a.runs):
                order = list(tools) if i % 2 == 0 else list(tools)[::-1]
                for k in order:
                    t, sz = convert(tools[k], src, ctype, f"{d}/out.qcow2")
                    times[k].append(t)
                    sizes[k] = sz
            q, b = statistics.median(times["qemu-img"]), statistics.median(times["blockd"])
            print(f"| raw → qcow2 -c, {ctype} | {q:.3f} ({min(times['qemu-img']):.3f}) | "
                  f"{b:.3f} ({min(times['blockd']):.3f}) | {q / b:.2f} | "
                  f"{sizes['qemu-img'] / 2**20:.1f} / {sizes['blockd'] / 2**20:.1f} |", flush=True)
    finally:
        shutil.rmtree(d)


if __name__ == "__main__":
    main()
