#!/usr/bin/env python3
"""pylxd's networks against a real rxd over its unix socket, the way its users call them.

Run by crates/rxc/tests/pylxd.rs inside a network lab (the daemon's bridges live in the lab's
network namespace; the socket is in the shared file system):

    networks.py --socket /path/to/unix.socket --image-alias bb

Host interfaces are listed and read as unmanaged networks; a bridge is created, read, edited
and its state read; an instance with a NIC on it gets a DHCP lease in the bridge's range, which
the instance state and the network's leases both report; a network in use is neither renamed
nor deleted; once free it is renamed and deleted. Any deviation raises, and the script exits
non-zero with pylxd's traceback.
"""

import argparse
import ipaddress
import signal
import sys
import time

from pylxd import Client
from pylxd.exceptions import LXDAPIException, NotFound


def step(what):
    print(f"ok: {what}", flush=True)


def refused(what, call, message):
    """`call` must fail with LXD's error `message`."""
    try:
        call()
    except LXDAPIException as e:
        assert str(e) == message, f"{what}: {e!r}"
        return
    raise AssertionError(f"{what}: was not refused")


def global_ipv4(instance, timeout=30):
    """The instance's global IPv4 on eth0 (udhcpc asks for it at boot), within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        state = instance.state()
        for a in state.network.get("eth0", {}).get("addresses", []):
            if a["family"] == "inet" and a["scope"] == "global":
                return a["address"]
        if time.monotonic() > deadline:
            raise AssertionError(f"no DHCP address on eth0: {state.network}")
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--image-alias", required=True)
    args = ap.parse_args()
    # A hang anywhere is a failure, not a stuck test run.
    signal.alarm(180)

    # A path to an existing socket is how pylxd is pointed at a local daemon.
    client = Client(endpoint=args.socket)
    assert client.trusted, client.host_info
    for extension in ("network", "network_state", "network_leases"):
        assert client.has_api_extension(extension), extension

    # The host's interfaces, unmanaged (the unix socket is the server administrator).
    names = [n.name for n in client.networks.all()]
    assert "up0" in names and "lo" in names, names
    up0 = client.networks.get("up0")
    assert up0.managed is False and up0.config == {} and up0.status == "", up0
    assert up0.state().state == "up", up0.state()
    assert not client.networks.exists("nope")
    try:
        client.networks.get("nope")
        raise AssertionError("a missing network was found")
    except NotFound as e:
        assert str(e) == "Network not found", repr(e)
    step("list and read host interfaces as unmanaged networks")

    net = client.networks.create(
        "pybr0",
        description="made by pylxd",
        type="bridge",
        config={
            "ipv4.address": "10.96.0.1/24",
            "ipv6.address": "none",
            "ipv4.dhcp.ranges": "10.96.0.20-10.96.0.30",
        },
    )
    assert net.managed is True and net.type == "bridge", net
    assert net.status == "Created" and net.used_by == [], net
    assert net.description == "made by pylxd", net.description
    assert net.config["ipv4.address"] == "10.96.0.1/24", net.config
    assert client.networks.exists("pybr0")
    assert "pybr0" in [n.name for n in client.networks.all()]
    refused(
        "a second pybr0",
        lambda: client.networks.create("pybr0", config={"ipv6.address": "none"}),
        'Network "pybr0" already exists',
    )
    step("create a bridge")

    # save() sends name, type and config back with PUT (the read-only fields are ignored).
    net.config["ipv4.dhcp.expiry"] = "2h"
    net.description = "edited by pylxd"
    net.save()
    net = client.networks.get("pybr0")
    assert net.config["ipv4.dhcp.expiry"] == "2h", net.config
    assert net.description == "edited by pylxd", net.description
    net.config["bogus.key"] = "1"
    refused("an unknown key", net.save, 'Invalid network config key "bogus.key"')
    net = client.networks.get("pybr0")
    assert "bogus.key" not in net.config, net.config
    step("edit a bridge")

    state = net.state()
    assert state.state == "up" and state.type == "broadcast", state
    assert state.mtu == 1500 and state.hwaddr.startswith("00:16:3e:"), state
    assert {"family": "inet", "address": "10.96.0.1", "netmask": "24", "scope": "global"} in (
        state.addresses
    ), state.addresses
    assert state.bridge["upper_devices"] == [], state.bridge
    step("read a bridge's state")

    instance = client.instances.create(
        {
            "name": "py-net1",
            "source": {"type": "image", "alias": args.image_alias},
            "devices": {"eth0": {"type": "nic", "network": "pybr0", "name": "eth0"}},
        },
        wait=True,
    )
    instance.start(wait=True)
    address = global_ipv4(instance)
    assert ipaddress.ip_address("10.96.0.20") <= ipaddress.ip_address(address) <= (
        ipaddress.ip_address("10.96.0.30")
    ), address
    eth0 = instance.state().network["eth0"]
    host_end = eth0["host_name"]
    assert eth0["hwaddr"] == instance.config["volatile.eth0.hwaddr"], eth0
    # pylxd has no call of its own for leases: the raw API, as its users reach it.
    leases = client.api.networks["pybr0"].leases.get().json()["metadata"]
    mine = [lease for lease in leases if lease["hostname"] == "py-net1"]
    assert [(m["address"], m["hwaddr"], m["type"]) for m in mine] == [
        (address, eth0["hwaddr"], "dynamic")
    ], leases
    assert net.state().bridge["upper_devices"] == [host_end], net.state().bridge
    net = client.networks.get("pybr0")
    assert net.used_by == ["/1.0/instances/py-net1"], net.used_by
    step(f"an instance on the bridge gets {address} by DHCP")

    refused("rename in use", lambda: net.rename("pybr1"), "Network is currently in use")
    refused("delete in use", net.delete, "The network is currently in use")
    step("a network in use is neither renamed nor deleted")

    instance.stop(wait=True)
    instance.delete(wait=True)
    renamed = net.rename("pybr1")
    assert renamed.name == "pybr1" and renamed.config["ipv4.address"] == "10.96.0.1/24"
    assert not client.networks.exists("pybr0")
    renamed.delete()
    assert not client.networks.exists("pybr1")
    names = [n.name for n in client.networks.all()]
    assert "pybr0" not in names and "pybr1" not in names, names
    step("rename and delete a network no longer in use")
    print("pylxd networks: all checks passed", flush=True)


if __name__ == "__main__":
    sys.exit(main())
