#!/usr/bin/env python3
"""Graph scale benchmark: blockd vs qemu-storage-daemon in the same run.

1. chain: open a qcow2 backing chain of depth D (25, 50, 100, 200, 500)
   with one blockdev-add of its top; the chain below comes from the image
   headers. Median time of RUNS per daemon, alternating; fcntl calls of
   one more run per daemon under `strace -f -c -e trace=fcntl`, minus
   those of a run that opens nothing.
2. nodes: blockdev-add N qcow2 nodes (each with its inline file node) on
   N distinct images, one command after the other; time per node over the
   ranges between the checkpoints; query-named-block-nodes at N; RSS at N;
   blockdev-del of all of them, time per node over the same ranges.
3. reopen: blockdev-reopen of the top of a depth-200 chain (read-only,
   then read-write again), median time of REOPENS.

Prints Markdown tables. usage:
  bench.py BLOCKD [--depths 25,50,100,200,500] [--runs 3] [--nodes 10000]
           [--checkpoints 100,1000,10000] [--reopens 20] [--no-strace]
           [--only chain,nodes,reopen] [--dir DIR]
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile, time

# qmpc is the QMP client of ../shared/conformance, beside the repository.
_here = os.path.dirname(os.path.abspath(__file__))
for up in (3, 4):
    sys.path.append(os.path.join(_here, *[".."] * up, "shared", "conformance"))
import qmpc  # noqa: E402


def daemon(bin_, d, wrap=()):
    sock = os.path.join(d, "m.sock")
    return qmpc.Daemon(list(wrap) + [bin_, "--chardev", f"socket,id=m,path={sock},server=on,wait=off",
                                     "--monitor", "chardev=m"], sock)


def cpu_ns(pid):
    """CPU time of every thread of pid so far (ns): on a loaded machine
    the daemons' own CPU time says more than wall time."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def make_chain(d, depth):
    prev = None
    for i in range(depth):
        p = os.path.join(d, f"l{i}.qcow2")
        if os.path.exists(p):  # kept from an earlier run with --dir
            prev = p
            continue
        argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
        if prev:
            argv += ["-b", prev, "-F", "qcow2"]
        subprocess.run(argv + [p, "64M"], check=True)
        prev = p


def open_chain(dm, d, depth):
    """Returns wall and daemon CPU seconds of the blockdev-add."""
    top = os.path.join(d, f"l{depth - 1}.qcow2")
    c0, t0 = cpu_ns(dm.p.pid), time.perf_counter()
    dm.c.cmd("blockdev-add", **{"driver": "qcow2", "node-name": "top",
                                "file": {"driver": "file", "node-name": "top-file", "filename": top}})
    t, c = time.perf_counter() - t0, (cpu_ns(dm.p.pid) - c0) / 1e9
    n = len(dm.c.cmd("query-named-block-nodes", flat=True))
    if n != 2 * depth:
        raise SystemExit(f"{n} nodes after opening a chain of depth {depth}, expected {2 * depth}")
    return t, c


def fcntl_calls(bin_, d, depth):
    out = os.path.join(d, "strace.out")
    dm = daemon(bin_, d, ["strace", "-f", "-c", "-e", "trace=fcntl", "-o", out])
    if depth:
        open_chain(dm, d, depth)
    dm.stop()
    m = re.search(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?fcntl$", open(out).read(), re.M)
    return int(m.group(1)) if m else 0


def bench_chain(args, d, daemons):
    make_chain(d, max(args.depths))
    rows = []
    idle = {name: fcntl_calls(b, d, 0) for name, b in daemons} if args.strace else {}
    for depth in args.depths:
        times = {name: [] for name, _ in daemons}
        cpus = {name: [] for name, _ in daemons}
        for _ in range(args.runs):
            for name, b in daemons:
                dm = daemon(b, d)
                try:
                    t, c = open_chain(dm, d, depth)
                    times[name].append(t)
                    cpus[name].append(c)
                finally:
                    dm.stop()
        calls = {name: fcntl_calls(b, d, depth) - idle[name] for name, b in daemons} if args.strace else {}
        med = lambda v: {n: statistics.median(x) for n, x in v.items()}
        rows.append((depth, med(times), med(cpus), calls))
    print("\n### Opening a qcow2 chain with one blockdev-add\n")
    print("| depth | qsd ms | blockd ms | qsd / blockd | qsd CPU ms | blockd CPU ms | CPU qsd / blockd "
          "| qsd fcntl | blockd fcntl | blockd CPU µs / level |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for depth, t, cpu, c in rows:
        q, b = t["qsd"], t["blockd"]
        cq, cb = cpu["qsd"], cpu["blockd"]
        print(f"| {depth} | {q*1e3:.1f} | {b*1e3:.1f} | {q/b:.2f} | {cq*1e3:.1f} | {cb*1e3:.1f} | {cq/cb:.2f} "
              f"| {c.get('qsd', '-')} | {c.get('blockd', '-')} | {cb*1e6/depth:.0f} |")
    sys.stdout.flush()


def sparse_copy(src, dst):
    data = open(src, "rb").read()
    with open(dst, "wb") as f:
        for off in range(0, len(data), 4096):
            chunk = data[off:off + 4096]
            if chunk.strip(b"\0"):
                f.seek(off)
                f.write(chunk)
        f.truncate(len(data))


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def bench_nodes(args, d, daemons):
    n = args.nodes
    tmpl = os.path.join(d, "t.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", tmpl, "64M"], check=True)
    for i in range(n):
        sparse_copy(tmpl, os.path.join(d, f"n{i}.qcow2"))
    cps = [c for c in args.checkpoints if c <= n]
    res = {}
    for name, b in daemons:
        dm = daemon(b, d)
        try:
            add, dele = [], []
            t0, last = time.perf_counter(), 0
            for i in range(n):
                dm.c.cmd("blockdev-add", **{"driver": "qcow2", "node-name": f"n{i}",
                                            "file": {"driver": "file", "filename": os.path.join(d, f"n{i}.qcow2")}})
                if i + 1 in cps:
                    t1 = time.perf_counter()
                    add.append((last, i + 1, (t1 - t0) / (i + 1 - last)))
                    t0, last = t1, i + 1
            rss = rss_kib(dm.p.pid)
            t0 = time.perf_counter()
            got = len(dm.c.cmd("query-named-block-nodes", flat=True))
            tq = time.perf_counter() - t0
            if got != 2 * n:
                raise SystemExit(f"{name}: {got} nodes, expected {2 * n}")
            t0, last = time.perf_counter(), 0
            for i in range(n):
                dm.c.cmd("blockdev-del", **{"node-name": f"n{i}"})
                if i + 1 in cps:
                    t1 = time.perf_counter()
                    dele.append((last, i + 1, (t1 - t0) / (i + 1 - last)))
                    t0, last = t1, i + 1
            res[name] = (add, dele, tq, rss)
        finally:
            dm.stop()
    print(f"\n### {n} qcow2 nodes (each with its file node), one command at a time\n")
    if "qsd" not in res:
        # qemu-storage-daemon's time per node grows with the node count, so
        # at 10,000 it takes far longer than blockd: measure blockd alone.
        add, dele, tq, rss = res["blockd"]
        print("| step | blockd |")
        print("|---|---:|")
        for lo, hi, t in add:
            print(f"| blockdev-add, nodes {lo}..{hi}, µs per node | {t*1e6:.0f} |")
        print(f"| query-named-block-nodes at {n} ({2*n} nodes), ms | {tq*1e3:.0f} |")
        print(f"| RSS at {n}, MiB | {rss/1024:.0f} |")
        for lo, hi, t in dele:
            print(f"| blockdev-del, nodes {lo}..{hi}, µs per node | {t*1e6:.0f} |")
        sys.stdout.flush()
        return
    print("| step | qsd | blockd | qsd / blockd |")
    print("|---|---:|---:|---:|")
    q, b = res["qsd"], res["blockd"]
    for i, (lo, hi, _) in enumerate(q[0]):
        print(f"| blockdev-add, nodes {lo}..{hi}, µs per node | {q[0][i][2]*1e6:.0f} | {b[0][i][2]*1e6:.0f} | {q[0][i][2]/b[0][i][2]:.2f} |")
    print(f"| query-named-block-nodes at {n} ({2*n} nodes), ms | {q[2]*1e3:.0f} | {b[2]*1e3:.0f} | {q[2]/b[2]:.2f} |")
    print(f"| RSS at {n}, MiB | {q[3]/1024:.0f} | {b[3]/1024:.0f} | {q[3]/b[3]:.2f} |")
    for i, (lo, hi, _) in enumerate(q[1]):
        print(f"| blockdev-del, nodes {lo}..{hi}, µs per node | {q[1][i][2]*1e6:.0f} | {b[1][i][2]*1e6:.0f} | {q[1][i][2]/b[1][i][2]:.2f} |")
    sys.stdout.flush()


def bench_reopen(args, d, daemons):
    depth = 200
    if not os.path.exists(os.path.join(d, f"l{depth - 1}.qcow2")):
        make_chain(d, depth)
    res = {}
    for name, b in daemons:
        dm = daemon(b, d)
        try:
            open_chain(dm, d, depth)
            below = os.path.join(d, f"l{depth - 2}.qcow2")
            backing = next(x["node-name"] for x in dm.c.cmd("query-named-block-nodes", flat=True)
                           if x["drv"] == "qcow2" and x["file"] == below)
            ts, cs = [], []
            for i in range(args.reopens):
                opts = {"driver": "qcow2", "node-name": "top", "read-only": i % 2 == 0,
                        "file": "top-file", "backing": backing}
                c0, t0 = cpu_ns(dm.p.pid), time.perf_counter()
                dm.c.cmd("blockdev-reopen", options=[opts])
                ts.append(time.perf_counter() - t0)
                cs.append((cpu_ns(dm.p.pid) - c0) / 1e9)
            res[name] = statistics.median(ts), statistics.median(cs)
        finally:
            dm.stop()
    print("\n### blockdev-reopen of the top of a depth-200 chain (read-only <-> read-write)\n")
    print("| qsd ms | blockd ms | qsd / blockd | qsd CPU ms | blockd CPU ms | CPU qsd / blockd |")
    print("|---:|---:|---:|---:|---:|---:|")
    (q, cq), (b, cb) = res["qsd"], res["blockd"]
    print(f"| {q*1e3:.2f} | {b*1e3:.2f} | {q/b:.2f} | {cq*1e3:.2f} | {cb*1e3:.2f} | {cq/cb:.2f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("blockd")
    ap.add_argument("--depths", default="25,50,100,200,500")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=10000)
    ap.add_argument("--checkpoints", default="100,1000,10000")
    ap.add_argument("--reopens", type=int, default=20)
    ap.add_argument("--no-strace", dest="strace", action="store_false")
    ap.add_argument("--only", default="chain,nodes,reopen")
    ap.add_argument("--dir")
    ap.add_argument("--blockd-only", action="store_true", help="measure blockd alone (the 10,000-node run)")
    args = ap.parse_args()
    args.depths = [int(x) for x in args.depths.split(",")]
    args.checkpoints = [int(x) for x in args.checkpoints.split(",")]
    daemons = [("qsd", "qemu-storage-daemon"), ("blockd", os.path.abspath(args.blockd))]
    if args.blockd_only:
        daemons = daemons[1:]
    d = args.dir or tempfile.mkdtemp(prefix="blockd-scale-")
    try:
        only = args.only.split(",")
        chain = os.path.join(d, "chain")
        os.makedirs(chain, exist_ok=True)
        if "chain" in only:
            bench_chain(args, chain, daemons)
        if "reopen" in only:
            bench_reopen(args, os.path.join(d, "chain"), daemons)
        if "nodes" in only:
            os.makedirs(os.path.join(d, "nodes"), exist_ok=True)
            bench_nodes(args, os.path.join(d, "nodes"), daemons)
    finally:
        if not args.dir:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
