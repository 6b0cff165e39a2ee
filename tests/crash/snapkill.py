#!/usr/bin/env python3
"""SIGKILL a storage daemon during internal snapshot commands.

Each round copies a template qcow2 image, starts the daemon on it
(qemu-storage-daemon's command line), sends one command and kills the
daemon after a random delay:

  create: blockdev-snapshot-internal-sync on an image without snapshots
          (every COPIED flag is cleared),
  delete: blockdev-snapshot-delete-internal-sync on an image with one
          snapshot (every COPIED flag is set again).

Then qemu-img check judges the image: its ERROR lines go to stderr, its
exit code is 0 (clean), 3 (leaks only) or 2 (errors).

usage: snapkill.py DAEMON [ROUNDS [MAX_DELAY_S [SIZE [DATA]]]]
  e.g. snapkill.py qemu-storage-daemon 120 0.06 256M 200M
"""
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def sync(path):
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    daemon = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    max_delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.06
    size = sys.argv[4] if len(sys.argv) > 4 else "256M"
    data = sys.argv[5] if len(sys.argv) > 5 else "200M"
    work = tempfile.mkdtemp(prefix="snapkill.")
    try:
        tpl = {"create": f"{work}/create.qcow2", "delete": f"{work}/delete.qcow2"}
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", tpl["create"], size], check=True)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x11 0 {data}", tpl["create"]],
                       check=True, capture_output=True)
        shutil.copy(tpl["create"], tpl["delete"])
        subprocess.run(["qemu-img", "snapshot", "-c", "s0", tpl["delete"]], check=True)
        stats = {}
        for rnd in range(rounds):
            kind = ("create", "delete")[rnd % 2]
            d = f"{work}/round"
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            img = f"{d}/a.qcow2"
            shutil.copy(tpl[kind], img)
            # Only the command's own metadata is left for its flushes.
            sync(img)
            sock = f"{d}/m.sock"
            p = subprocess.Popen([daemon,
                                  "--blockdev", f"driver=file,filename={img},node-name=f",
                                  "--blockdev", "driver=qcow2,file=f,node-name=q",
                                  "--chardev", f"socket,id=m,path={sock},server=on,wait=off",
                                  "--monitor", "chardev=m"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # The socket file appears at bind(), before listen().
            s = socket.socket(socket.AF_UNIX)
            for _ in range(500):
                try:
                    s.connect(sock)
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    time.sleep(0.02)
            else:
                sys.exit(f"{daemon} did not open {sock}")
            f = s.makefile("rw")
            f.readline()
            f.write('{"execute":"qmp_capabilities"}\n')
            f.flush()
            f.readline()
            if kind == "create":
                c = {"execute": "blockdev-snapshot-internal-sync",
                     "arguments": {"device": "q", "name": "tt"}}
            else:
                c = {"execute": "blockdev-snapshot-delete-internal-sync",
                     "arguments": {"device": "q", "name": "s0"}}
            delay = random.random() * max_delay
            f.write(json.dumps(c) + "\n")
            f.flush()
            time.sleep(delay)
            p.kill()
            p.wait()
            s.close()
            r = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
            errs = [l for l in r.stderr.splitlines() if l.startswith(("ERROR", "Warning"))]
            listing = subprocess.run(["qemu-img", "snapshot", "-l", img],
                                     capture_output=True, text=True).stdout
            present = ("tt" if kind == "create" else "s0") in listing
            st = stats.setdefault(kind, {"kills": 0, "errors": 0, "leaks only": 0, "clean": 0})
            st["kills"] += 1
            if r.returncode == 2 or errs:
                st["errors"] += 1
            elif r.returncode == 3:
                st["leaks only"] += 1
            elif r.returncode == 0:
                st["clean"] += 1
            else:
                sys.exit(f"qemu-img check failed ({r.returncode}): {r.stderr}")
            print(rnd, kind, f"delay={delay * 1000:.1f}ms",
                  "snapshot present" if present else "snapshot absent",
                  f"check rc={r.returncode}", errs[:1], flush=True)
        print("summary", os.path.basename(daemon), json.dumps(stats))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
