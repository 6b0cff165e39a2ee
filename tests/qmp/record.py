#!/usr/bin/env python3
"""Record a transcript from qemu-storage-daemon, the reference.

usage: record.py INPUT.in > testdata/NAME.qmp

INPUT.in holds the directives to send ("-> ...", "->| ...", "!repeat ...",
"!args ...", "!sh ...", comments). Each send is fed to
`qemu-storage-daemon --chardev stdio,id=s --monitor chardev=s` and what it
answers within a short wait is written as "<-" lines right after it, so the
expectations blockd is tested against are the reference's own replies.
Values that legitimately differ (the version and package strings) become
"$ANY". Review the result before committing it.
"""
import json, os, select, shlex, subprocess, sys, tempfile, time

VOLATILE = {"package"}


def scrub(v):
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if k in VOLATILE or k == "qemu":
                out[k] = "$ANY"
            elif k == "timestamp":
                continue
            else:
                out[k] = scrub(x)
        return out
    if isinstance(v, list):
        return [scrub(x) for x in v]
    return v


def main():
    lines = open(sys.argv[1]).read().splitlines()
    tmp = tempfile.mkdtemp(prefix="record-")
    args = []
    for l in lines:
        if l.startswith("!args"):
            args += [a.replace("$TMP", tmp) for a in shlex.split(l[5:])]
        elif l.startswith("!sh") and not any(x.startswith("->") for x in lines[:lines.index(l)]):
            subprocess.run(l[3:].replace("$TMP", tmp), shell=True, check=True, cwd=tmp, capture_output=True)
    qsd_args = [a for a in args if not a.startswith("--max-message-size")]
    p = subprocess.Popen(["qemu-storage-daemon", "--chardev", "stdio,id=s", "--monitor", "chardev=s"] + qsd_args,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp)
    buf = b""

    def drain(wait):
        nonlocal buf
        out = []
        deadline = time.time() + wait
        while True:
            r, _, _ = select.select([p.stdout], [], [], max(0, deadline - time.time()))
            if not r:
                break
            chunk = os.read(p.stdout.fileno(), 1 << 20)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                # Not QMP: what QEMU prints on its stdout, such as
                # bdrv_img_create's "Formatting ..." line.
                if line.strip().startswith(b"{"):
                    out.append(scrub(json.loads(line)))
            deadline = time.time() + wait
        return out

    def emit(msgs):
        for m in msgs:
            print("<- " + json.dumps(m).replace(tmp, "$TMP"))

    emit(drain(1.0))
    for l in lines:
        if l.startswith("->|"):
            p.stdin.write(l[3:].lstrip(" ").replace("$TMP", tmp).encode()); p.stdin.flush()
        elif l.startswith("->"):
            p.stdin.write(l[2:].lstrip(" ").replace("$TMP", tmp).encode() + b"\n"); p.stdin.flush()
        elif l.startswith("!repeat"):
            _, n, text = l.split(" ", 2)
            p.stdin.write(text.encode() * int(n)); p.stdin.flush()
        elif l.startswith("!sh") and l in lines and any(x.startswith("->") for x in lines[:lines.index(l)]):
            subprocess.run(l[3:].replace("$TMP", tmp), shell=True, check=True, cwd=tmp, capture_output=True)
        print(l)
        if l.startswith("->") or l.startswith("!repeat"):
            emit(drain(0.3))
    p.stdin.close()
    try:
        p.wait(3)
    except subprocess.TimeoutExpired:
        p.kill()


if __name__ == "__main__":
    main()
