"""Export scenarios for ../shared/conformance/conform.py, run side by side
on qemu-storage-daemon and blockd:

  go build -o /tmp/blockd-exports ./cmd/blockd
  python3 /work/shared/conformance/conform.py --compare --bin /tmp/blockd-exports tests/conformance/exports.py

vhost-user-blk and vduse-blk are not compared: blockd refuses them
(docs/exports.md).
"""
import json
import subprocess


def _qcow2(t, name, img, **extra):
    o = {"driver": "qcow2", "node-name": name,
         "file": {"driver": "file", "node-name": name + "-file", "filename": t.path(img)}}
    o.update(extra)
    return o


def _server(t, sock="nbd.sock", **extra):
    a = {"addr": {"type": "unix", "data": {"path": t.path(sock)}}}
    a.update(extra)
    return t.q("nbd-server-start", a)


def _uri(t, name, sock="nbd.sock"):
    return "nbd+unix:///%s?socket=%s" % (name, t.path(sock))


def _reads(t, label, *args):
    """qemu-io reads, recording the read lines and any pattern failure
    (not the timings)."""
    cmd = " ".join("'%s'" % a for a in ["qemu-io"] + list(args))
    t.sh(label, ["sh", "-c", cmd + " 2>&1 | grep -E '^(read|Pattern)'"], keep=("rc", "out"))


def _exports(r):
    return sorted((e["id"], e["type"], e["node-name"], e["shutting-down"]) for e in r)


def scn_export_nbd_roundtrip(t):
    t.img("a.qcow2", size="16M", writes=["write -P 0x11 0 1M"])
    t.start()
    t.q("blockdev-add", _qcow2(t, "n", "a.qcow2"))
    _server(t)
    t.q("block-export-add", {"type": "nbd", "id": "e", "node-name": "n", "name": "disk", "writable": True,
                             "description": "a disk", "allocation-depth": True})
    t.q("query-block-exports", project=_exports)
    t.sh("qemu-io writes over nbd", ["qemu-io", "-f", "raw", "-c", "write -P 0x22 1M 1M", _uri(t, "disk")])
    _reads(t, "qemu-io pattern read over nbd", "-f", "raw", "-c", "read -P 0x22 1M 1M",
           "-c", "read -P 0x11 0 1M", _uri(t, "disk"))
    t.sh("qemu-img info over nbd", ["qemu-img", "info", "--output=json", _uri(t, "disk")], keep=("rc",))
    t.sh("nbdinfo map", ["nbdinfo", "--map", _uri(t, "disk")], keep=("rc", "out"))
    t.sh("nbdinfo allocation depth", ["nbdinfo", "--map=qemu:allocation-depth", _uri(t, "disk")], keep=("rc", "out"))
    t.q("blockdev-del", {"node-name": "n"}, label="blockdev-del of the exported node")
    t.q("block-export-del", {"id": "e"})
    t.ev("BLOCK_EXPORT_DELETED", keys=("id",))
    t.q("query-block-exports", project=_exports)
    t.q("nbd-server-stop")
    t.q("blockdev-del", {"node-name": "n"})
    t.stop()
    t.check("image clean", "a.qcow2")


def scn_export_refusals(t):
    t.img("a.qcow2", size="16M")
    t.img("b.qcow2", size="16M")
    t.start()
    t.q("blockdev-add", _qcow2(t, "a", "a.qcow2"))
    t.q("blockdev-add", _qcow2(t, "ro", "b.qcow2", **{"read-only": True}))
    t.q("block-export-add", {"type": "nbd", "id": "e1", "node-name": "a"}, label="no server")
    t.q("nbd-server-stop", label="stop without server")
    _server(t)
    _server(t, "nbd2.sock")
    t.q("block-export-add", {"type": "nbd", "id": "e1", "node-name": "a", "writable": True})
    t.q("block-export-add", {"type": "nbd", "id": "e1", "node-name": "a"}, label="duplicate id")
    t.q("block-export-add", {"type": "nbd", "id": "e2", "node-name": "a"}, label="name in use")
    t.q("block-export-add", {"type": "nbd", "id": "e3", "node-name": "nosuch"}, label="unknown node")
    t.q("block-export-add", {"type": "nbd", "id": "e4", "node-name": "ro", "writable": True}, label="read-only node writable")
    t.q("block-export-add", {"type": "nbd", "id": "e5", "node-name": "a-file", "writable": True}, label="no write permission")
    t.q("block-export-add", {"type": "nbd", "id": "bad id", "node-name": "a"}, label="bad id")
    t.q("block-export-del", {"id": "nosuch"}, label="del unknown")
    t.q("nbd-server-add", {"device": "ro"})
    t.q("nbd-server-remove", {"name": "ro"})
    t.ev("BLOCK_EXPORT_DELETED", keys=("id",), label="legacy removal event")
    t.q("block-export-add", {"type": "nbd", "id": "e6", "node-name": "ro", "name": "other"})
    t.q("query-block-exports", project=_exports)
    t.q("nbd-server-stop")
    t.ev("BLOCK_EXPORT_DELETED", keys=("id",), label="stop: first export")
    t.ev("BLOCK_EXPORT_DELETED", keys=("id",), label="stop: second export")
    t.q("query-block-exports", project=_exports)
    t.stop()


def scn_export_hard_delete_with_client(t):
    t.img("a.qcow2", size="16M", writes=["write -P 0x11 0 1M"])
    t.start()
    t.q("blockdev-add", _qcow2(t, "n", "a.qcow2"))
    _server(t)
    t.q("block-export-add", {"type": "nbd", "id": "e", "node-name": "n", "name": "disk"})
    client = subprocess.Popen(["nbdsh", "-u", _uri(t, "disk"), "-c", "import sys; print('connected', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        client.stdout.readline()  # connected: the export is in use
        t.q("block-export-del", {"id": "e"}, label="safe del with a client")
        t.q("block-export-del", {"id": "e", "mode": "hard"}, label="hard del with a client")
        t.ev("BLOCK_EXPORT_DELETED", keys=("id",))
    finally:
        client.stdin.close()
        client.wait(20)
    t.q("query-block-exports", project=_exports)
    t.stop()
    t.check("image clean", "a.qcow2")


def scn_export_follows_active_commit(t):
    t.img("base.qcow2", size="16M", writes=["write -P 0x11 0 4M"])
    t.img("top.qcow2", backing="base.qcow2", writes=["write -P 0x22 2M 4M"])
    t.start()
    t.q("blockdev-add", _qcow2(t, "base", "base.qcow2"))
    t.q("blockdev-add", _qcow2(t, "top", "top.qcow2", backing="base"))
    _server(t)
    t.q("block-export-add", {"type": "nbd", "id": "e", "node-name": "top", "name": "disk", "writable": True})
    t.q("block-commit", {"job-id": "j", "device": "top"})
    t.ev("BLOCK_JOB_READY", keys=("device",))
    t.sh("write during commit", ["qemu-io", "-f", "raw", "-c", "write -P 0x33 8M 1M", _uri(t, "disk")])
    t.q("job-complete", {"id": "j"})
    t.ev("BLOCK_JOB_COMPLETED", keys=("device", "len", "offset"))
    t.q("query-block-exports", project=_exports, label="export now on base")
    t.sh("write after commit", ["qemu-io", "-f", "raw", "-c", "write -P 0x44 9M 1M", _uri(t, "disk")])
    t.q("block-export-del", {"id": "e"})
    t.ev("BLOCK_EXPORT_DELETED", keys=("id",))
    t.stop()
    t.check("base clean", "base.qcow2")
    _reads(t, "base holds every write", "-r", "-c", "read -P 0x11 0 2M", "-c", "read -P 0x22 2M 4M",
           "-c", "read -P 0x33 8M 1M", "-c", "read -P 0x44 9M 1M", t.path("base.qcow2"))


# RFC 7919's ffdhe2048 (PKCS#3 PEM), so that qemu-storage-daemon does not
# spend seconds generating DH parameters for its PSK credentials.
_FFDHE2048 = """-----BEGIN DH PARAMETERS-----
MIIBDAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAgICAQA=
-----END DH PARAMETERS-----
"""


def scn_export_nbd_tls_psk(t):
    import os
    for d, key in (("psk", "0123456789abcdef0123456789abcdef"), ("cli", "0123456789abcdef0123456789abcdef"),
                   ("wrong", "ffffffffffffffffffffffffffffffff")):
        os.mkdir(t.path(d))
        with open(os.path.join(t.path(d), "keys.psk"), "w") as f:
            f.write("alice:%s\n" % key)
    with open(os.path.join(t.path("psk"), "dh-params.pem"), "w") as f:
        f.write(_FFDHE2048)
    t.img("a.qcow2", size="16M", writes=["write -P 0x11 0 1M"])
    t.start()
    t.q("blockdev-add", _qcow2(t, "n", "a.qcow2"))
    t.q("object-add", {"qom-type": "tls-creds-psk", "id": "tls0", "endpoint": "server", "dir": t.path("psk")})
    _server(t, **{"tls-creds": "tls0"})
    t.q("block-export-add", {"type": "nbd", "id": "e", "node-name": "n", "name": "disk", "writable": True})

    def qemu(credir):
        return ["--object", "tls-creds-psk,id=c,endpoint=client,username=alice,dir=" + t.path(credir), "--image-opts",
                "driver=nbd,server.type=unix,server.path=%s,export=disk,tls-creds=c" % t.path("nbd.sock")]

    t.sh("qemu-io writes over TLS-PSK", ["qemu-io"] + qemu("cli") + ["-c", "write -P 0x22 1M 1M"])
    _reads(t, "qemu-io pattern read over TLS-PSK", *(qemu("cli") + ["-c", "read -P 0x22 1M 1M", "-c", "read -P 0x11 0 1M"]))
    t.sh("qemu-img info with a wrong key", ["qemu-img", "info"] + qemu("wrong"), keep=("rc", "err"))
    t.sh("qemu-img info without TLS", ["qemu-img", "info", _uri(t, "disk")], keep=("rc",))
    t.sh("nbdinfo over TLS-PSK", ["nbdinfo", "--map", "nbds+unix://alice@/disk?socket=%s&tls-psk-file=%s"
                                  % (t.path("nbd.sock"), os.path.join(t.path("cli"), "keys.psk"))], keep=("rc", "out"))
    t.q("object-del", {"id": "tls0"}, label="object-del of credentials in use")
    _reads(t, "qemu-io after object-del", *(qemu("cli") + ["-c", "read -P 0x22 1M 1M"]))
    t.q("block-export-del", {"id": "e"})
    t.ev("BLOCK_EXPORT_DELETED", keys=("id",))
    t.q("nbd-server-stop")
