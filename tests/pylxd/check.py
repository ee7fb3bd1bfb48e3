#!/usr/bin/env python3
"""pylxd, the Python client for LXD, against a real rxd over HTTPS, the way its users call it.

Run by crates/rxc/tests/pylxd.rs:

    check.py --endpoint https://127.0.0.1:PORT --server-cert server.crt \
             --password PW --image busybox.tar.gz --workdir DIR

Two clients with their own new certificates enrol, one by the trust password and one by a join
token the first one asks for; then certificates are listed, the image uploaded, an instance
created, started, executed in, files pushed and pulled, snapshots taken, listed, restored and
deleted, the instance stopped and deleted, while the events websocket is listened to. Any
deviation raises, and the script exits non-zero with pylxd's traceback.
"""

import argparse
import datetime
import hashlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pylxd import Client
from pylxd.client import EventType
from pylxd.exceptions import LXDAPIException


def step(what):
    print(f"ok: {what}", flush=True)


def make_identity(workdir, name):
    """A client certificate and key as `lxc` makes them: self-signed, P-384."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA384())
    )
    crt = os.path.join(workdir, f"{name}.crt")
    key_path = os.path.join(workdir, f"{name}.key")
    with open(crt, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return (crt, key_path), fingerprint


def wait_until(what, predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--server-cert", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    # A hang anywhere (a websocket nobody closes) is a failure, not a stuck test run.
    signal.alarm(240)

    # Enrolment by password: the server certificate is verified against the pinned file, the
    # client presents its own, and `authenticate` names it in the request body.
    cert_a, fp_a = make_identity(args.workdir, "pylxd-a")
    a = Client(endpoint=args.endpoint, cert=cert_a, verify=args.server_cert)
    assert not a.trusted, a.host_info
    a.authenticate(args.password)
    assert a.trusted, a.host_info
    assert a.host_info["auth"] == "trusted"
    step("authenticate with the trust password")

    # Enrolment by a join token that the first client asks for.
    token = a.certificates.create_token(name="pylxd-b")
    cert_b, fp_b = make_identity(args.workdir, "pylxd-b")
    b = Client(endpoint=args.endpoint, cert=cert_b, verify=args.server_cert)
    assert not b.trusted
    b.authenticate(token)
    assert b.trusted, b.host_info
    step("authenticate with a join token")

    listed = {c.fingerprint: c for c in a.certificates.all()}
    assert fp_a in listed and fp_b in listed, sorted(listed)
    entry = a.certificates.get(fp_b)
    assert entry.name == "pylxd-b", entry.name
    assert entry.type == "client", entry.type
    step("list and get certificates")

    # The host's hardware: pylxd's `resources` property (it checks the `resources` extension).
    resources = a.resources
    assert resources["cpu"]["total"] == os.cpu_count(), resources["cpu"]
    assert resources["memory"]["total"] > 0, resources["memory"]
    assert isinstance(resources["storage"]["disks"], list), resources["storage"]
    step("read the server's resources")

    # Lifecycle events, from here on.
    events = a.events(event_types={EventType.Lifecycle})
    events.connect()
    listener = threading.Thread(target=events.run, daemon=True)
    listener.start()

    with open(args.image, "rb") as f:
        image_data = f.read()
    image = a.images.create(image_data, public=False)
    assert image.fingerprint == hashlib.sha256(image_data).hexdigest(), image.fingerprint
    image.add_alias("bb", "busybox")
    assert a.images.get_by_alias("bb").fingerprint == image.fingerprint
    assert image.fingerprint in [i.fingerprint for i in a.images.all()]
    step("upload an image and alias it")

    c = a.instances.create(
        {"name": "py1", "source": {"type": "image", "alias": "bb"}}, wait=True
    )
    c.start(wait=True)
    c.sync()
    assert c.status == "Running", c.status
    assert "py1" in [i.name for i in a.instances.all()]
    step("create and start an instance")

    # pylxd sends "user": null, "group": null, "cwd": null.
    r = c.execute(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.exit_code, r.stdout, r.stderr) == (3, "out\n", "err\n"), r
    r = c.execute(["sh", "-c", 'echo "$GREETING"; pwd'], environment={"GREETING": "hi"}, cwd="/tmp")
    assert (r.exit_code, r.stdout) == (0, "hi\n/tmp\n"), r
    r = c.execute(["cat"], stdin_payload="from stdin\n")
    assert (r.exit_code, r.stdout) == (0, "from stdin\n"), r
    step("execute commands")

    c.files.put("/root/hello.txt", b"hello from pylxd\n", mode="0640")
    assert c.files.get("/root/hello.txt") == b"hello from pylxd\n"
    r = c.execute(["stat", "-c", "%a", "/root/hello.txt"])
    assert r.stdout == "640\n", r
    c.files.delete("/root/hello.txt")
    r = c.execute(["test", "-e", "/root/hello.txt"])
    assert r.exit_code == 1, r
    c.files.put("/root/state.txt", b"before\n")
    step("push, pull and delete files")

    snap = c.snapshots.create("snap0", wait=True)
    assert [s.name for s in c.snapshots.all()] == ["snap0"]
    assert c.snapshots.get("snap0").name == "snap0"
    c.files.put("/root/state.txt", b"after\n")
    c.stop(wait=True)
    c.restore_snapshot("snap0", wait=True)
    c.start(wait=True)
    assert c.files.get("/root/state.txt") == b"before\n"
    # A copy brings the snapshot and the files as they are now.
    copied = a.instances.create(
        {"name": "pycopy", "source": {"type": "copy", "source": c.name}}, wait=True
    )
    assert [s.name for s in copied.snapshots.all()] == ["snap0"]
    copied.start(wait=True)
    assert copied.files.get("/root/state.txt") == b"before\n"
    copied.stop(wait=True, force=True)
    copied.delete(wait=True)
    step("copy an instance with its snapshot")
    snap.delete(wait=True)
    assert c.snapshots.all() == []
    step("take, list, restore and delete a snapshot")

    c.stop(wait=True)
    c.sync()
    assert c.status == "Stopped", c.status
    published = c.publish(wait=True)
    assert published.fingerprint != image.fingerprint
    exported = published.export().read()
    assert hashlib.sha256(exported).hexdigest() == published.fingerprint
    published.delete(wait=True)
    step("publish the stopped instance as an image and export it")

    # Profiles: pylxd's save() sends back name and used_by too (ignored, as LXD does).
    p = a.profiles.create(
        "pyprof",
        config={"limits.processes": "60", "user.from": "pylxd"},
        description="made by pylxd",
    )
    assert a.profiles.exists("pyprof")
    assert "pyprof" in [x.name for x in a.profiles.all()]
    p = a.profiles.get("pyprof")
    assert p.description == "made by pylxd", p.description
    p.config["user.from"] = "pylxd-edited"
    p.save()
    assert a.profiles.get("pyprof").config["user.from"] == "pylxd-edited"
    c2 = a.instances.create(
        {
            "name": "py2",
            "source": {"type": "image", "alias": "bb"},
            "profiles": ["default", "pyprof"],
        },
        wait=True,
    )
    assert c2.profiles == ["default", "pyprof"], c2.profiles
    assert c2.expanded_config["limits.processes"] == "60", c2.expanded_config
    assert c2.expanded_config["user.from"] == "pylxd-edited"
    assert a.profiles.get("pyprof").used_by == ["/1.0/instances/py2"]
    c2.profiles = ["default"]
    c2.save(wait=True)
    assert a.instances.get("py2").expanded_config.get("limits.processes") is None
    renamed = p.rename("pyprof2")
    assert renamed.name == "pyprof2" and not a.profiles.exists("pyprof")
    renamed.delete()
    assert not a.profiles.exists("pyprof2")
    c2.delete(wait=True)
    step("profiles: create, edit, apply, rename and delete")

    # Storage pools: a btrfs pool on a loop file, an instance in it, its volume listed.
    pool = a.storage_pools.create(
        {"name": "pypool", "driver": "btrfs", "config": {"size": "1GiB"}}
    )
    assert a.storage_pools.exists("pypool")
    pool = a.storage_pools.get("pypool")
    assert pool.driver == "btrfs" and pool.config["size"] == "1GiB", pool.config
    assert pool.resources.get().space["total"] > 0
    c4 = a.instances.create(
        {
            "name": "py4",
            "source": {"type": "image", "alias": "bb"},
            "devices": {"root": {"type": "disk", "path": "/", "pool": "pypool"}},
        },
        wait=True,
    )
    assert "/1.0/instances/py4" in a.storage_pools.get("pypool").used_by
    names = [(v.type, v.name) for v in pool.volumes.all()]
    assert ("container", "py4") in names, names
    # A custom volume: made, edited (pylxd PUTs its config), snapshotted, attached to the running instance, in use,
    # detached and deleted.
    vol = pool.volumes.create({"name": "pyvol", "config": {"size": "32MiB"}}, wait=True)
    assert vol.type == "custom" and vol.config["size"] == "32MiB", vol.config
    vol.config["user.note"] = "from pylxd"
    vol.config["snapshots.schedule"] = "@daily"
    vol.save(wait=True)
    vol = pool.volumes.get("custom", "pyvol")
    assert vol.config["user.note"] == "from pylxd", vol.config
    assert vol.config["snapshots.schedule"] == "@daily", vol.config
    snap = vol.snapshots.create(wait=True)
    assert snap.name == "snap0", snap.name
    listed = vol.snapshots.all()
    assert [str(n).split("/")[-1] for n in listed] == ["snap0"], listed
    c4.start(wait=True)
    c4.devices["scratch"] = {"type": "disk", "pool": "pypool", "source": "pyvol", "path": "/scratch"}
    c4.save(wait=True)
    res = c4.execute(["sh", "-c", "echo hi > /scratch/x && cat /scratch/x"])
    assert res.exit_code == 0 and res.stdout == "hi\n", res
    assert "/1.0/instances/py4" in pool.volumes.get("custom", "pyvol").used_by
    try:
        pool.volumes.get("custom", "pyvol").delete()
        raise AssertionError("an attached volume was deleted")
    except LXDAPIException as e:
        assert "still in use" in str(e), e
    # Mounted by the start after a restart, and detached from the running instance all the same.
    c4.restart(force=True, wait=True)
    c4 = a.instances.get("py4")
    del c4.devices["scratch"]
    c4.save(wait=True)
    res = c4.execute(["test", "-e", "/scratch/x"])
    assert res.exit_code != 0, "still mounted after the detach"
    pool.volumes.get("custom", "pyvol").delete()
    assert "pyvol" not in [v.name for v in pool.volumes.all()]
    step("storage volumes: create, edit, schedule, snapshot, attach, refuse deleting in use, detach from a running instance, delete")
    c4.stop(force=True, wait=True)
    c4.delete(wait=True)
    pool.delete()
    assert not a.storage_pools.exists("pypool")
    step("storage pools: create a btrfs pool, put an instance in it, delete both")

    # Devices: a host folder at create, a character device hot-plugged and unplugged (pylxd's
    # save() sends the whole instance back).
    shared = tempfile.mkdtemp(prefix="pylxd-shared-")
    os.chmod(shared, 0o755)
    with open(os.path.join(shared, "hello"), "w") as f:
        f.write("from the host\n")
    c3 = a.instances.create(
        {
            "name": "py3",
            "source": {"type": "image", "alias": "bb"},
            "devices": {
                "data": {"type": "disk", "source": shared, "path": "/mnt/data", "readonly": "true"}
            },
        },
        wait=True,
    )
    c3.start(wait=True)
    r = c3.execute(["cat", "/mnt/data/hello"])
    assert r.exit_code == 0 and r.stdout == "from the host\n", r
    r = c3.execute(["touch", "/mnt/data/new"])
    assert r.exit_code != 0, r
    assert c3.expanded_devices["data"]["path"] == "/mnt/data", c3.expanded_devices
    c3.devices["fuse"] = {"type": "unix-char", "source": "/dev/fuse"}
    c3.save(wait=True)
    assert c3.execute(["test", "-c", "/dev/fuse"]).exit_code == 0
    c3 = a.instances.get("py3")
    del c3.devices["fuse"]
    c3.save(wait=True)
    assert c3.execute(["test", "-e", "/dev/fuse"]).exit_code != 0
    c3.stop(force=True, wait=True)
    c3.delete(wait=True)
    shutil.rmtree(shared)
    step("devices: a host folder, a character device plugged and unplugged")

    c.delete(wait=True)
    assert "py1" not in [i.name for i in a.instances.all()]
    image.delete(wait=True)
    step("stop and delete the instance, delete the image")

    def actions():
        return [
            (m["metadata"].get("action"), m["metadata"].get("source"))
            for m in list(events.messages)
            if m.get("type") == "lifecycle"
        ]

    wanted = [
        ("instance-created", "/1.0/instances/py1"),
        ("instance-started", "/1.0/instances/py1"),
        ("instance-deleted", "/1.0/instances/py1"),
    ]
    wait_until(f"lifecycle events {wanted}", lambda: all(w in actions() for w in wanted))
    assert all(m.get("type") == "lifecycle" for m in events.messages), events.messages
    events.close()
    step("lifecycle events on the events websocket")
    print("pylxd: all checks passed", flush=True)


if __name__ == "__main__":
    sys.exit(main())
