#!/usr/bin/env python3
"""pylxd's `Instance.migrate` between two rxd servers over HTTPS.

Run by crates/rxc/tests/pylxd.rs:

    migrate.py --src https://127.0.0.1:P1 --src-cert src.crt \
               --dst https://127.0.0.1:P2 --dst-cert dst.crt \
               --password PW --image busybox.tar.gz --workdir DIR

One client enrols with both servers by their trust password, uploads the image to the source,
makes a stopped instance with a file in it and a snapshot, and migrates it to the target: pylxd
asks the source for a migration operation and hands its secrets to the target, which pulls the
instance, after which pylxd deletes it on the source. Any deviation raises.
"""

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check import make_identity, step  # noqa: E402

from pylxd import Client  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--src-cert", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--dst-cert", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    signal.alarm(240)

    cert, _ = make_identity(args.workdir, "pylxd-migrate")
    src = Client(endpoint=args.src, cert=cert, verify=args.src_cert)
    dst = Client(endpoint=args.dst, cert=cert, verify=args.dst_cert)
    src.authenticate(args.password)
    dst.authenticate(args.password)
    assert src.trusted and dst.trusted
    step("enrol with both servers")

    with open(args.image, "rb") as f:
        image = src.images.create(f.read(), public=False)
    image.add_alias("bb", "busybox")
    c = src.instances.create(
        {"name": "mig1", "source": {"type": "image", "alias": "bb"}}, wait=True
    )
    c.files.put("/root/marker", b"pylxd moved me\n")
    c.snapshots.create("before", wait=True)
    c.config["user.note"] = "travels"
    c.save(wait=True)
    step("make a stopped instance with a file and a snapshot")

    c.migrate(dst, wait=True)
    assert not src.instances.exists("mig1")
    moved = dst.instances.get("mig1")
    assert moved.config.get("user.note") == "travels", moved.config
    assert [s.name for s in moved.snapshots.all()] == ["before"]
    assert moved.files.get("/root/marker") == b"pylxd moved me\n"
    moved.start(wait=True)
    r = moved.execute(["cat", "/root/marker"])
    assert (r.exit_code, r.stdout) == (0, "pylxd moved me\n"), r
    moved.stop(force=True, wait=True)
    moved.delete(wait=True)
    step("migrate it to the other server")
    print("pylxd: migration passed", flush=True)


if __name__ == "__main__":
    main()
