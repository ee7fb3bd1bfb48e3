"""Writes the seed corpora; run through seed.sh. Every seed is a few KiB at most."""

import base64
import gzip
import io
import json
import lzma
import os
import shutil
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def clear(target):
    d = os.path.join(CORPUS, target)
    if os.path.isdir(d):
        for n in os.listdir(d):
            if n.startswith("seed-"):
                os.remove(os.path.join(d, n))


# --- images -----------------------------------------------------------------------------------

META = (
    "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n"
    '  description: "busybox 1.36.1"\n  os: busybox\n  release: "1.36.1"\n'
)
META_TEMPLATES = META + (
    "templates:\n  /etc/hostname:\n    when: [create, copy]\n    template: hostname.tpl\n"
    "    create_only: false\n    properties:\n      default: rxd\n"
)


def entry(path, kind="file", data=b"", mode=None, link="", uid=0, gid=0):
    return dict(path=path, kind=kind, data=data, mode=mode, link=link, uid=uid, gid=gid)


def build(entries, fmt=tarfile.USTAR_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            ti = tarfile.TarInfo(e["path"])
            ti.uid, ti.gid, ti.mtime = e["uid"], e["gid"], 1700000000
            data = e["data"].encode() if isinstance(e["data"], str) else e["data"]
            kind = e["kind"]
            if kind == "file":
                ti.type, ti.size, ti.mode = tarfile.REGTYPE, len(data), e["mode"] or 0o644
                t.addfile(ti, io.BytesIO(data))
                continue
            ti.mode = e["mode"] or (0o755 if kind == "dir" else 0o777)
            ti.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
                "char": tarfile.CHRTYPE,
            }[kind]
            ti.linkname = e["link"]
            t.addfile(ti)
    return trim(buf.getvalue())


def trim(tar):
    """Drops tarfile's padding to a 10 KiB record, keeping the two zero blocks that end a tar."""
    end = len(tar.rstrip(b"\0"))
    end = (end + 511) // 512 * 512
    return tar[:end] + bytes(1024)


def busybox_like():
    """The layout scripts/make-busybox-image.sh makes, with a stand-in busybox binary."""
    es = [entry("metadata.yaml", data=META), entry("rootfs/", "dir")]
    for d in ["bin", "sbin", "etc", "dev", "proc", "sys", "root", "run", "var", "usr", "usr/bin"]:
        es.append(entry(f"rootfs/{d}/", "dir"))
    es.append(entry("rootfs/tmp/", "dir", mode=0o1777))
    es.append(entry("rootfs/bin/busybox", data=b"\x7fELF busybox stand-in", mode=0o755))
    for applet in ["sh", "ls", "cat", "true"]:
        es.append(entry(f"rootfs/bin/{applet}", "symlink", link="busybox"))
    es.append(entry("rootfs/sbin/init", "symlink", link="../bin/busybox"))
    es.append(entry("rootfs/etc/inittab", data="::sysinit:/bin/true\n::restart:/sbin/init\n"))
    es.append(entry("rootfs/etc/passwd", data="root:x:0:0:root:/root:/bin/sh\n"))
    es.append(entry("rootfs/etc/group", data="root:x:0:\n"))
    return es


def image_seeds():
    t = "image_unpack"
    clear(t)
    good = busybox_like()
    put(t, "busybox-like.tar", build(good))
    put(t, "busybox-like.tar.gz", gzip.compress(build(good), mtime=0))
    put(t, "busybox-like.tar.xz", lzma.compress(build(good), format=lzma.FORMAT_XZ))
    put(t, "busybox-like-pax.tar", build(good, tarfile.PAX_FORMAT))
    rich = [entry("metadata.yaml", data=META_TEMPLATES), entry("rootfs/", "dir"), entry("rootfs/bin/", "dir")]
    rich += [
        entry("rootfs/ro/", "dir", mode=0o555),
        entry("rootfs/ro/inside", data="x"),
        entry("rootfs/bin/su", data="suid", mode=0o4755),
        entry("rootfs/home-file", data="user", uid=1000, gid=1000),
        entry("rootfs/etc-link", "symlink", link="/etc"),
        entry("rootfs/bin/busybox", data="BB"),
        entry("rootfs/bin/bb2", "hardlink", link="rootfs/bin/busybox"),
        entry("rootfs/dev-null", "char"),
        entry("rootfs/fifo", "fifo"),
        entry("templates/", "dir"),
        entry("templates/hostname.tpl", data="{{ container.name }}\n"),
        entry("./rootfs/dotted", data="x"),
        entry("rootfs/" + "d" * 120 + "/" + "f" * 120, data="long"),
    ]
    put(t, "rich.tar", build(rich, tarfile.GNU_FORMAT))
    base = [entry("metadata.yaml", data=META), entry("rootfs/", "dir")]
    hostile = {
        "dotdot": [entry("rootfs/../../evil", data="x")],
        "absolute": [entry("/etc/evil", data="x")],
        "outside-top": [entry("other", data="x")],
        "through-symlink": [entry("rootfs/esc", "symlink", link="/tmp"), entry("rootfs/esc/evil", data="x")],
        "through-file": [entry("rootfs/f", data="x"), entry("rootfs/f/g", data="x")],
        "hardlink-dotdot": [entry("rootfs/pw", "hardlink", link="../../../etc/passwd")],
        "hardlink-absolute": [entry("rootfs/pw", "hardlink", link="/etc/passwd")],
        "hardlink-to-symlink": [entry("rootfs/s", "symlink", link="/etc/passwd"), entry("rootfs/pw", "hardlink", link="rootfs/s")],
        "hardlink-through-symlink": [entry("rootfs/s", "symlink", link="/etc"), entry("rootfs/pw", "hardlink", link="rootfs/s/passwd")],
        "hardlink-missing": [entry("rootfs/pw", "hardlink", link="rootfs/nope")],
        "id-out-of-map": [entry("rootfs/x", data="x", uid=70000, gid=70000)],
        "dir-over-file": [entry("rootfs/a", data="x"), entry("rootfs/a/", "dir")],
    }
    for name, extra in hostile.items():
        put(t, name + ".tar", build(base + extra))
    put(t, "symlinked-rootfs.tar", build([entry("metadata.yaml", data=META), entry("rootfs", "symlink", link="/")]))
    put(t, "symlinked-metadata.tar", build([entry("metadata.yaml", "symlink", link="/etc/passwd"), entry("rootfs/", "dir")]))
    put(t, "hardlinked-metadata.tar", build([entry("rootfs/", "dir"), entry("rootfs/m", data=META), entry("metadata.yaml", "hardlink", link="rootfs/m")]))
    put(t, "no-metadata.tar", build([entry("rootfs/", "dir")]))
    put(t, "no-rootfs.tar", build([entry("metadata.yaml", data=META)]))
    put(t, "bad-yaml.tar", build([entry("metadata.yaml", data="architecture: [1, 2"), entry("rootfs/", "dir")]))


def metadata_seeds():
    t = "image_metadata"
    clear(t)
    put(t, "busybox.yaml", META)
    put(t, "templates.yaml", META_TEMPLATES)
    put(t, "expiry.yaml", "architecture: aarch64\ncreation_date: 1\nexpiry_date: 2000000000\n")
    put(t, "flow.yaml", '{architecture: x86_64, creation_date: 0, properties: {os: "a"}, templates: {}}')
    put(t, "anchors.yaml", "architecture: &a x86_64\ncreation_date: 5\nproperties:\n  os: *a\n  <<: {release: x}\n")
    put(t, "bomb.yaml", "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\narchitecture: x\ncreation_date: 1\n")
    put(t, "tags.yaml", "architecture: !!str 1\ncreation_date: !!int 0x10\nproperties: !!map {a: b}\n")
    put(t, "bad.yaml", "architecture: [1, 2")


# --- bakery -----------------------------------------------------------------------------------


def bakery_seeds():
    with open(os.path.join(ROOT, "crates/rxd-bakery/tests/vectors.json")) as f:
        v = json.load(f)
    fp, tp = v["first_party"], v["third_party"]
    t = "macaroon_decode"
    clear(t)
    put(t, "first-party.json", fp["json_text"])
    put(t, "first-party-go.json", json.dumps(fp["go_json"]))
    put(t, "third-party-primary.json", json.dumps(tp["primary_json"]))
    put(t, "discharge-bound.json", json.dumps(tp["discharge"]["json_bound"]))
    put(t, "slice.json", tp["slice_json_text"])
    put(t, "python-wrapper.json", json.dumps(tp["bakery"]["python_wrapper"]))
    put(t, "go-wrapper.json", json.dumps(tp["bakery"]["go_wrapper"]))
    put(t, "go-style.json", json.dumps(v["go_style"]["json"]))
    put(t, "go-style-b64.json", json.dumps(v["go_style"]["json_b64_everywhere"]))
    put(t, "challenge-macaroon.json", json.dumps(tp["bakery"]["discharge_required_body"]["Info"]["Macaroon"]))
    put(t, "macaroon-id.bin", bytes.fromhex(v["macaroon_id"]["id_hex"]))

    t = "bakery_cookie"
    clear(t)
    put(t, "cookie-std", "macaroon-auth=" + tp["cookie_std"])
    put(t, "cookie-urlsafe", "other=1; macaroon-x=" + tp["cookie_urlsafe"] + "; a=b")
    put(t, "cookie-unbound", "macaroon-auth=" + tp["cookie_unbound_std"])
    put(t, "macaroons-header", "\nMacaroons: " + tp["cookie_std"] + ", " + tp["cookie_urlsafe"])
    put(t, "first-party", "macaroon-fp=" + base64.b64encode(("[" + fp["json_text"] + "]").encode()).decode())

    t = "caveat_codec"
    clear(t)
    for i, c in enumerate(v["caveat_v3"]):
        put(t, f"payload-{i}", b"\0" + bytes.fromhex(c["payload_hex"]))
        if "secret_plaintext_hex" in c:
            put(t, f"secret-{i}", b"\1" + bytes.fromhex(c["secret_plaintext_hex"]))
    put(t, "cdata", b"\0" + bytes.fromhex(tp["bakery"]["payload_hex"]))
    put(t, "roundtrip", b"\2need-declared username is-authenticated-user\0" + b"k" * 24 + b"\0std:")


# --- rxd-core ----------------------------------------------------------------------------------


def config_seeds():
    t = "config_values"
    clear(t)
    for i, a in enumerate(["127.0.0.1:8443", "[::]:8443", "[::1]", ":8443", "0.0.0.0", "example.com:443", "[fe80::1%eth0]:1"]):
        put(t, f"address-{i}", b"\0" + a.encode())
    for i, e in enumerate(["3H", "1d 2H", "30M", "1y 2w", "-1d", "10S", ""]):
        put(t, f"expiry-{i}", b"\1" + e.encode())
    for i, f in enumerate(["status eq Running", "name eq c1 or config.image.os eq busybox", "not type eq vm and expanded_config.limits.cpu ne 1", "name=c.*", "status eq \"Running\""]):
        put(t, f"filter-{i}", b"\2" + f.encode())
    server = [
        {"core.https_address": "[::]:8443", "core.trust_password": "sekret"},
        {"core.remote_token_expiry": "1d", "core.trust_ca_certificates": True},
        {"candid.api.url": "https://candid.example.com", "candid.api.key": "Y9ijQUXiOPIMvM6NvrDWceBIgM6oOmfu2fa/kf0oUgw=", "candid.expiry": "3600", "candid.domains": "example.com,users"},
        {"candid.agent.username": "rxd", "candid.agent.private_key": None, "core.https_address": ""},
    ]
    for i, body in enumerate(server):
        put(t, f"server-put-{i}", b"\3" + json.dumps(body).encode())
        put(t, f"server-patch-{i}", b"\4" + json.dumps(body).encode())
    instance = [
        {"security.privileged": "true", "security.idmap.isolated": "true", "security.idmap.size": "65536", "security.idmap.base": "1065536"},
        {"limits.cpu": "2", "limits.memory": "512MiB", "limits.processes": "100", "boot.autostart": "false"},
        {"environment.FOO": "bar", "user.x": "y", "volatile.apply_template": "create", "image.os": "busybox"},
        {"limits.memory": "50%", "security.nesting": "true", "raw.lxc": "lxc.aa_profile=unconfined"},
        {"limits.cpu": "0-1,3", "limits.cpu.allowance": "25ms/100ms", "limits.memory.enforce": "soft", "limits.memory.swap": "false", "linux.sysctl.net.ipv4.ip_forward": "1", "boot.autostart.priority": "10", "boot.autostart.delay": "5"},
        {"snapshots.schedule": "@daily, 0 6 * * 1-5", "snapshots.pattern": "{{ creation_date|date:'2006-01-02_15-04-05' }}", "snapshots.expiry": "1M 2H", "snapshots.schedule.stopped": "true"},
    ]
    for i, body in enumerate(instance):
        put(t, f"instance-{i}", b"\5" + json.dumps(body).encode())
    put(t, "instance-key", b"\5limits.memory=2GB")
    put(t, "instance-key-cpu", b"\5limits.cpu=0-1,3")
    put(t, "instance-key-schedule", b"\5snapshots.schedule=*/15 9-17 * jan-mar mon-fri, @hourly")
    put(t, "instance-key-pattern", b"\5snapshots.pattern=auto-{{ creation_date|date:\"060102-1504\" }}-%d")
    projects = [
        {"features.images": "true", "features.profiles": "true", "restricted": "true"},
        {"restricted.containers.privilege": "unprivileged", "restricted.devices.disk": "block", "limits.instances": "10"},
    ]
    for i, body in enumerate(projects):
        put(t, f"project-{i}", b"\6" + json.dumps(body).encode())
    put(t, "project-key", b"\6restricted=false")
    for i, n in enumerate(["default/c1", "p_1.x/web-1", "prod_c1", "a/-bad", "snap0"]):
        put(t, f"name-{i}", b"\7" + n.encode())
    put(t, "subid", b"\x08root:1000000:1000000000\nuser:100000:65536\n")
    import struct
    raw = struct.pack("<II", 1000000, 1000000000)
    raw += struct.pack("<IIB", 65536, 0, 0) + struct.pack("<IIB", 65536, 1200000, 1) + struct.pack("<IIB", 1, 4294967295, 1)
    put(t, "idmap-blocks", b"\x09" + raw)


# --- the daemon ------------------------------------------------------------------------------

CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCATmgAwIBAgIUQ==\n-----END CERTIFICATE-----\n"

# One or more bodies per entry of rxd_daemon::fuzzing::REQUEST_BODIES, in its order.
BODIES = [
    [{"type": "client", "name": "laptop", "password": "sekret", "restricted": True, "projects": ["p1"]},
     {"type": "client", "certificate": CERT, "name": None, "token": "abc"}],
    [{"name": "laptop", "type": "client", "restricted": False, "projects": [], "certificate": CERT}],
    [{"width": 80, "height": 24, "type": "console"}, {"type": "vga"}],
    [{"command": ["/bin/sh", "-c", "echo hi"], "environment": {"HOME": "/root", "TERM": "xterm"},
      "wait-for-websocket": True, "interactive": True, "width": 80, "height": 24,
      "record-output": False, "user": 1000, "group": 1000, "cwd": "/tmp"}],
    [{"identity_type": "certificate", "identity": "abcdef0123", "role": "operator", "scope": "project", "project": "p1"}],
    [{"name": "bb", "description": None, "target": "0123abcd"}],
    [{"description": "busybox", "target": "0123abcd"}, {}],
    [{"name": "bb2"}],
    [{"architecture": "x86_64", "config": {"limits.cpu": "2", "volatile.idmap.next": "[]"},
      "devices": {"root": {"type": "disk", "path": "/", "pool": "default"}}, "ephemeral": False,
      "profiles": ["default"], "stateful": False, "description": "x"}, {"restore": "snap0"}],
    [{"name": "c2", "migration": False, "live": False}],
    [{"name": "c1", "type": "container", "source": {"type": "image", "alias": "bb"},
      "config": {"security.privileged": "false", "security.idmap.isolated": "true"},
      "devices": {}, "ephemeral": False, "description": "test"},
     {"name": "c2", "source": {"type": "image", "fingerprint": "0123abcd"}, "profiles": ["default"]}],
    [{"action": "start", "timeout": 30, "force": False, "stateful": False}, {"action": "stop", "timeout": -1, "force": True},
     {"action": "freeze"}],
    [{"name": "p1", "description": "team", "config": {"restricted": "true", "features.images": "false"}}],
    [{"description": "team", "config": {"restricted": "true"}, "used_by": ["/1.0/instances/c1"]}],
    [{"name": "p2"}],
    [{"config": {"core.https_address": "[::]:8443", "core.trust_password": "sekret"}}, {"config": None}],
    [{"name": "snap0", "stateful": False, "expires_at": "2030-01-01T00:00:00Z"}, {}],
    [{"name": "snap1", "migration": False}],
    [{"status": "acknowledged"}],
]

QUERIES = [
    ["recursion=1&filter=status+eq+Running&all-projects=true", "recursion=2", "project=p1&recursion=0"],
    ["type=operation,logging,lifecycle&all-projects=false", "type=lifecycle"],
    ["timeout=30", "timeout=-1"],
    ["path=/etc/passwd", "path=etc%2Fhostname&project=p1"],
    ["secret=0123456789abcdef"],
]


def daemon_seeds():
    t = "request_bodies"
    clear(t)
    for kind, bodies in enumerate(BODIES):
        for i, body in enumerate(bodies):
            put(t, f"body-{kind:02}-{i}", bytes([kind]) + json.dumps(body).encode())
    for kind, qs in enumerate(QUERIES):
        for i, q in enumerate(qs):
            put(t, f"query-{kind}-{i}", bytes([0xE0 + kind]) + q.encode())
    for i, h in enumerate(["1000", "-1", "0644", "0o755", "0x1ff", "4294967296", "-0x10"]):
        put(t, f"header-{i}", b"\xf0" + h.encode())

    t = "ws_control"
    clear(t)
    frames = [
        {"command": "window-resize", "args": {"width": "80", "height": "24"}},
        {"command": "window-resize", "args": {"width": "0", "height": "4294967295"}},
        {"command": "signal", "signal": 15},
        {"command": "signal", "signal": 65},
        {"command": "signal", "signal": -9, "args": {}},
        {"command": "unknown", "args": {"a": "b"}},
    ]
    for i, f in enumerate(frames):
        put(t, f"frame-{i}", json.dumps(f))


if __name__ == "__main__":
    daemon_seeds()
    image_seeds()
    metadata_seeds()
    bakery_seeds()
    config_seeds()
