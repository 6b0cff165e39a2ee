"""Objects, QOM and chardev scenarios for ../shared/conformance/conform.py,
run side by side on qemu-storage-daemon and blockd (both with their
monitor on the socket chardev "m", so lists that include it compare):

  python3 ../shared/conformance/conform.py --compare --bin /tmp/blockd tests/conformance/objects.py
"""
import os


def whole(r):
    return r


def scn_objects_and_qom(t):
    with open(t.path("key.txt"), "w") as f:
        f.write("s3cret")
    os.mkdir(t.path("psk"))
    with open(t.path("psk/keys.psk"), "w") as f:
        f.write("alice:0123456789abcdef0123456789abcdef\n")
    t.start()
    t.q("object-add", {"qom-type": "iothread", "id": "io0", "poll-max-ns": 0})
    t.q("object-add", {"qom-type": "secret", "id": "s0", "data": "abc"})
    t.q("object-add", {"qom-type": "secret", "id": "s1", "file": t.path("key.txt"), "format": "raw"})
    t.q("object-add", {"qom-type": "secret", "id": "mk", "data": "0123456789abcdef0123456789abcdef"})
    t.q("object-add", {"qom-type": "secret", "id": "enc", "keyid": "mk", "format": "base64",
                       "iv": "YWJjZGVmZ2hpamtsbW5vcA==", "data": "BfC/UAu2/YPHlX8/eFYeCw=="})
    t.q("object-add", {"qom-type": "secret", "id": "bad", "keyid": "mk", "data": "abc"}, label="secret without iv")
    t.q("object-add", {"qom-type": "tls-creds-psk", "id": "p0", "dir": t.path("psk"), "endpoint": "server"})
    t.q("object-add", {"qom-type": "authz-simple", "id": "a0", "identity": "CN=alice"})
    t.q("object-add", {"qom-type": "authz-list", "id": "al", "policy": "allow",
                       "rules": [{"match": "CN=a*", "policy": "deny", "format": "glob"}]})
    t.q("object-add", {"qom-type": "tls-creds-anon", "id": "an", "endpoint": "server"})
    t.q("object-add", {"qom-type": "main-loop", "id": "ml"})
    t.q("object-add", {"qom-type": "main-loop", "id": "ml2"}, label="second main-loop")
    t.q("object-add", {"qom-type": "iothread", "id": "io1", "thread-pool-min": 9, "thread-pool-max": 3},
        label="iothread pool refused")
    for path in ("/", "/objects", "/objects/io0", "/objects/s0", "/objects/p0", "/objects/a0", "/objects/ml", "/objects/al", "/objects/an",
                 "io0", "", "/nope"):
        t.q("qom-list", {"path": path}, project=whole, label=f"qom-list {path!r}")
    for path, prop in (("/objects/io0", "poll-max-ns"), ("/objects/io0", "thread-pool-max"), ("/objects/s1", "file"),
                       ("/objects/s1", "format"), ("/objects/enc", "keyid"), ("/objects/p0", "endpoint"),
                       ("/objects/p0", "loaded"), ("/objects/al", "rules"), ("/objects", "io0"), ("/", "objects"), ("/objects/a0", "nope")):
        t.q("qom-get", {"path": path, "property": prop}, project=whole, label=f"qom-get {path} {prop}")
    t.q("qom-set", {"path": "/objects/a0", "property": "identity", "value": "CN=bob"})
    t.q("qom-get", {"path": "/objects/a0", "property": "identity"}, project=whole, label="identity after set")
    t.q("qom-set", {"path": "/objects/io0", "property": "thread-pool-min", "value": 100}, label="pool min above max")
    t.q("qom-get", {"path": "/objects/io0", "property": "thread-pool-min"}, project=whole, label="refused min kept")
    t.q("qom-set", {"path": "/objects/s0", "property": "loaded", "value": False}, label="loaded read-only")
    t.q("qom-set", {"path": "/objects/io0", "property": "poll-grow", "value": "x"}, label="wrong type")
    t.q("object-del", {"id": "ml"}, label="main-loop stays")
    t.q("object-del", {"id": "s0"})
    t.q("object-del", {"id": "s0"}, label="deleted twice")
    t.q("qom-list", {"path": "/objects"}, project=whole, label="objects after deletion")
    for impl, abstract in (("secret_common", True), ("event-loop-base", True), ("tls-creds-psk", False),
                           ("chardev-ringbuf", True), ("nope", False)):
        t.q("qom-list-types", {"implements": impl, "abstract": abstract}, project=whole,
            label=f"types implementing {impl}")
    for typ in ("iothread", "secret", "tls-creds-x509", "authz-simple", "chardev-socket", "event-loop-base",
                "user-creatable", "nope"):
        t.q("qom-list-properties", {"typename": typ}, project=whole, label=f"properties of {typ}")
    t.stop()


def scn_iothread_moves(t):
    t.img("d.img", size="1M", fmt="raw")
    t.start()
    t.q("object-add", {"qom-type": "iothread", "id": "io0"})
    t.q("object-add", {"qom-type": "secret", "id": "s0", "data": "x"})
    t.q("blockdev-add", {"driver": "file", "node-name": "f0", "filename": t.path("d.img")})
    t.q("blockdev-add", {"driver": "raw", "node-name": "r0", "file": "f0"})
    t.q("x-blockdev-set-iothread", {"node-name": "r0", "iothread": "io0"})
    t.q("x-blockdev-set-iothread", {"node-name": "r0", "iothread": None}, label="back to the main loop")
    t.q("x-blockdev-set-iothread", {"node-name": "r0", "iothread": "s0"}, label="not an iothread")
    t.q("x-blockdev-set-iothread", {"node-name": "nope", "iothread": "io0"}, label="no node")
    t.q("nbd-server-start", {"addr": {"type": "unix", "data": {"path": t.path("nbd.sock")}}})
    t.q("block-export-add", {"type": "nbd", "id": "e0", "node-name": "r0"})
    t.q("x-blockdev-set-iothread", {"node-name": "r0", "iothread": "io0"}, label="exported node refused")
    t.q("x-blockdev-set-iothread", {"node-name": "r0", "iothread": "io0", "force": True}, label="forced")
    t.q("x-blockdev-set-iothread", {"node-name": "r0", "iothread": None, "force": True}, label="forced back")
    t.q("block-export-del", {"id": "e0"})
    t.ev("BLOCK_EXPORT_DELETED", keys=("id",))
    t.q("nbd-server-stop")
    t.stop()


def pty_name(r):
    return {"pty": r.get("pty", "").startswith("/dev/pts/")}


def scn_chardevs(t):
    with open(t.path("in.txt"), "w") as f:
        f.write("in\n")
    t.start()
    t.q("query-chardev", project=whole, label="only the monitor")
    t.q("query-chardev-backends", project=whole)
    t.q("chardev-add", {"id": "r0", "backend": {"type": "ringbuf", "data": {"size": 8}}})
    t.q("chardev-add", {"id": "mem", "backend": {"type": "memory", "data": {}}})
    t.q("chardev-add", {"id": "n0", "backend": {"type": "null", "data": {"logfile": t.path("log.txt")}}})
    t.q("chardev-add", {"id": "f0", "backend": {"type": "file", "data": {"out": t.path("out.txt"), "in": t.path("in.txt")}}})
    t.q("chardev-add", {"id": "p0", "backend": {"type": "pipe", "data": {"device": t.path("in.txt")}}})
    t.q("chardev-add", {"id": "s0", "backend": {"type": "socket", "data": {
        "addr": {"type": "unix", "data": {"path": t.path("c.sock")}}, "server": True, "wait": False}}})
    t.q("chardev-add", {"id": "s1", "backend": {"type": "socket", "data": {
        "addr": {"type": "unix", "data": {"path": t.path("c.sock")}}, "server": False}}}, label="client to s0")
    t.q("chardev-add", {"id": "pt", "backend": {"type": "pty", "data": {}}}, project=pty_name)
    t.q("chardev-add", {"id": "st", "backend": {"type": "stdio", "data": {}}})
    t.q("chardev-add", {"id": "st2", "backend": {"type": "stdio", "data": {}}}, label="second stdio")
    t.q("chardev-add", {"id": "mx", "backend": {"type": "mux", "data": {"chardev": "n0"}}})
    t.q("chardev-add", {"id": "mx2", "backend": {"type": "mux", "data": {"chardev": "m"}}}, label="mux over the monitor")
    t.q("chardev-add", {"id": "r0", "backend": {"type": "null", "data": {}}}, label="duplicate id")
    t.q("chardev-add", {"id": "r1", "backend": {"type": "ringbuf", "data": {"size": 12}}}, label="size not a power of 2")
    t.q("chardev-add", {"id": "v", "backend": {"type": "vc", "data": {}}}, label="driver not built")
    t.q("query-chardev", project=lambda r: [(c["label"], c["frontend-open"]) for c in r], label="all")
    t.q("qom-list", {"path": "/chardevs"}, project=whole)
    t.q("qom-get", {"path": "/chardevs/s0", "property": "addr"}, project=whole)
    t.q("qom-get", {"path": "/chardevs/s1", "property": "connected"}, project=whole)
    t.q("ringbuf-write", {"device": "r0", "data": "0123456789"})
    t.q("ringbuf-read", {"device": "r0", "size": 4}, project=whole)
    t.q("ringbuf-write", {"device": "r0", "data": "aGk=", "format": "base64"})
    t.q("ringbuf-read", {"device": "r0", "size": 100, "format": "base64"}, project=whole)
    t.q("ringbuf-read", {"device": "n0", "size": 1}, label="not a ring")
    t.q("ringbuf-read", {"device": "r0", "size": 0}, label="size zero")
    t.q("chardev-send-break", {"id": "s0"})
    t.q("chardev-change", {"id": "r0", "backend": {"type": "memory", "data": {"size": 2}}})
    t.q("qom-get", {"path": "/chardevs/r0", "property": "type"}, project=whole)
    t.q("chardev-change", {"id": "m", "backend": {"type": "null", "data": {}}}, label="the monitor's chardev")
    t.q("chardev-change", {"id": "mx", "backend": {"type": "null", "data": {}}}, label="a mux")
    t.q("chardev-remove", {"id": "n0"}, label="a mux's base")
    t.q("chardev-remove", {"id": "m"}, label="the monitor's")
    for cid in ("r0", "mem", "f0", "p0", "s0", "s1", "pt", "st"):
        t.q("chardev-remove", {"id": cid}, label=f"remove {cid}")
    t.q("query-chardev", project=whole, label="left")
    t.stop()


def _ffdhe2048():
    """RFC 7919's group, from exports.py's scenarios (one copy)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "conformance_exports", os.path.join(os.path.dirname(os.path.abspath(__file__)), "exports.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod._FFDHE2048


def without_ports(r):
    """query-chardev but the monitor's, with the ports port-0 listeners
    got replaced."""
    import re
    return sorted((c["label"], re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", c["filename"]))
                  for c in r if c["label"] != "m")


def scn_chardev_tls(t):
    d = t.path("psk")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "keys.psk"), "w") as f:
        f.write("qemu:" + "3c" * 32 + "\n")
    with open(os.path.join(d, "dh-params.pem"), "w") as f:
        f.write(_ffdhe2048())
    t.start()
    t.q("object-add", {"qom-type": "tls-creds-psk", "id": "p0", "endpoint": "server", "dir": d})
    t.q("object-add", {"qom-type": "tls-creds-psk", "id": "pc", "endpoint": "client", "dir": d})
    t.q("object-add", {"qom-type": "secret", "id": "sec0", "data": "x"})
    inet = {"type": "inet", "data": {"host": "127.0.0.1", "port": "0"}}
    unix = {"type": "unix", "data": {"path": t.path("c.sock")}}
    for label, data in [
        ("unix with TLS", {"addr": unix, "server": True, "wait": False, "tls-creds": "p0"}),
        ("authz without creds", {"addr": inet, "server": True, "wait": False, "tls-authz": "z"}),
        ("unknown creds", {"addr": inet, "server": True, "wait": False, "tls-creds": "nope"}),
        ("not creds", {"addr": inet, "server": True, "wait": False, "tls-creds": "sec0"}),
        ("client creds on a server", {"addr": inet, "server": True, "wait": False, "tls-creds": "pc"}),
        ("server creds on a client", {"addr": inet, "server": False, "tls-creds": "p0"}),
        ("TLS server", {"addr": inet, "server": True, "wait": False, "tls-creds": "p0", "tls-authz": "later"}),
        ("TLS telnet server", {"addr": inet, "server": True, "wait": False, "telnet": True, "tls-creds": "p0"}),
    ]:
        t.q("chardev-add", {"id": "c" + str(len(label)), "backend": {"type": "socket", "data": data}}, label=label)
    t.q("query-chardev", project=without_ports, label="TLS chardevs")
    t.stop()


def scn_new_object_types(t):
    """tls-cipher-suites as NBD server credentials (each handshake fails),
    thread-context's affinity, pr-manager-helper connected to
    qemu-pr-helper and named by a file node, object-del of each."""
    import subprocess
    import time
    t.img("d.img", size="1M", fmt="raw")
    helper = subprocess.Popen(["qemu-pr-helper", "-k", t.path("pr.sock")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(t.path("pr.sock")):
                break
            time.sleep(0.05)
        t.start()
        t.q("object-add", {"qom-type": "tls-cipher-suites", "id": "cs", "priority": "NORMAL", "endpoint": "server"})
        t.q("nbd-server-start", {"addr": {"type": "unix", "data": {"path": t.path("nbd.sock")}}, "tls-creds": "cs"})
        t.sh("TLS client refused", ["nbdinfo", "--list", "nbds+unix://?socket=" + t.path("nbd.sock")])
        t.q("nbd-server-stop")
        t.q("object-del", {"id": "cs"})
        t.q("object-add", {"qom-type": "thread-context", "id": "tc", "cpu-affinity": [0]})
        t.q("qom-get", {"path": "/objects/tc", "property": "cpu-affinity"}, project=whole)
        t.q("qom-set", {"path": "/objects/tc", "property": "cpu-affinity", "value": [0, 65535]})
        t.q("qom-get", {"path": "/objects/tc", "property": "cpu-affinity"}, project=whole, label="impossible CPU ignored")
        t.q("qom-get", {"path": "/objects/tc", "property": "thread-id"}, project=lambda r: isinstance(r, int) and r > 0)
        t.q("object-del", {"id": "tc"})
        t.q("object-add", {"qom-type": "pr-manager-helper", "id": "pr", "path": t.path("pr.sock")})
        t.ev("PR_MANAGER_STATUS_CHANGED", keys=("id", "connected"))
        t.q("blockdev-add", {"driver": "file", "node-name": "f", "filename": t.path("d.img"), "pr-manager": "pr"})
        t.q("object-del", {"id": "pr"}, label="in use by a file node")
        t.q("qom-list", {"path": "/objects"}, project=whole)
        t.stop()
    finally:
        helper.kill()
        helper.wait()
