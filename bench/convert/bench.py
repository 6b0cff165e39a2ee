#!/usr/bin/env python3
"""Convert benchmark: blockd img convert vs qemu-img convert, same run.

The source is a qcow2 image of SIZE (2 GiB by default) whose first half of
every 64 MiB is random data and second half a hole: SIZE/2 of realistic
(incompressible, non-zero) data and as much unallocated space. Each run
converts it to qcow2 and to raw with both tools, alternating which goes
first; `sync` runs before each conversion so that one run's dirty pages
are not written back during the next. Each output is checked with
qemu-img compare. Prints the median of RUNS per tool and the ratio
qemu-img time / blockd time (> 1: blockd is faster) as a Markdown table.

usage: bench.py BLOCKD_BINARY [--size 2G] [--runs 7] [--dir DIR]
"""
import argparse, os, shutil, statistics, subprocess, tempfile, time

EXTENT = 64 << 20


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1].upper()] if s[-1].upper() in mult else int(s)


def make_source(d, size):
    raw = f"{d}/src.raw"
    with open(raw, "wb") as f:
        f.truncate(size)
        with open("/dev/urandom", "rb") as r:
            for off in range(0, size, EXTENT):
                f.seek(off)
                for _ in range(EXTENT // 2 // (1 << 20)):
                    f.write(r.read(1 << 20))
    src = f"{d}/src.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, src], check=True)
    os.unlink(raw)
    subprocess.run(["cat", src], stdout=subprocess.DEVNULL, check=True)  # page cache
    return src


def convert(argv0, src, fmt, out):
    subprocess.run(["sync"])
    t0 = time.perf_counter()
    subprocess.run(argv0 + ["convert", "-O", fmt, src, out], check=True)
    t = time.perf_counter() - t0
    if subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", fmt, src, out]).returncode != 0:
        raise SystemExit(f"{argv0[0]}: {fmt} output differs from the source")
    os.unlink(out)
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("blockd")
    ap.add_argument("--size", default="2G")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--dir")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="bench-convert-", dir=a.dir)
    try:
        src = make_source(d, parse_size(a.size))
        tools = {"qemu-img": ["qemu-img"], "blockd": [a.blockd, "img"]}
        print(f"| convert ({a.size} qcow2, half data) | qemu-img s (median) | blockd s (median) | qemu-img / blockd |")
        print("|---|---:|---:|---:|")
        for fmt in ("qcow2", "raw"):
            times = {k: [] for k in tools}
            for i in range(a.runs):
                order = list(tools) if i % 2 == 0 else list(tools)[::-1]
                for k in order:
                    times[k].append(convert(tools[k], src, fmt, f"{d}/out.{fmt}"))
            q, b = statistics.median(times["qemu-img"]), statistics.median(times["blockd"])
            print(f"| qcow2 → {fmt} | {q:.3f} (min {min(times['qemu-img']):.3f}) | "
                  f"{b:.3f} (min {min(times['blockd']):.3f}) | {q / b:.2f} |", flush=True)
    finally:
        shutil.rmtree(d)


if __name__ == "__main__":
    main()
