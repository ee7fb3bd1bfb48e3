#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test against the real
# binaries. Runs as root (rxd is a root daemon; the tests start it on temporary state dirs).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests drive: OpenSSL's s_client (TLS policy), curl and setpriv (socket
# access as another user), Debian's LXD client (wire compatibility), busybox for the test image,
# mmdebstrap for the Debian 12 systemd image (scripts/make-debian-image.sh), squashfs-tools to
# pack it as image servers do, lxcfs (run
# privately by one test), libseccomp's headers with pkg-config to build the container helper's
# seccomp support, libclang for btrfs-uapi's build (it generates its ioctl bindings from the
# kernel's btrfs headers), iproute2 (`ip`), nftables and dnsmasq-base, which the network tests drive
# inside namespaces of their own, btrfs-progs for btrfs storage pools (on loop files the
# tests make), and Debian's LXD itself, run privately by one test (no network) to carry
# backups both ways.
need=()
for pkg in openssl curl util-linux xz-utils busybox-static mmdebstrap squashfs-tools lxcfs lxd-client libseccomp-dev pkg-config libclang-dev iproute2 nftables dnsmasq-base btrfs-progs lxd; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Python's macaroonbakery and pymacaroons: an independent implementation of the Candid side
# (a discharger and a client, tests/candid/) for the macaroon login tests. pylxd: an independent
# client of LXD's API (tests/pylxd/) for the pylxd interop test.
pip_install() {
  python3 -m pip --version >/dev/null 2>&1 || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  }
  local pip=(python3 -m pip install --quiet --disable-pip-version-check -r "$1")
  PIP_ROOT_USER_ACTION=ignore "${pip[@]}" 2>/dev/null ||
    PIP_ROOT_USER_ACTION=ignore "${pip[@]}" --break-system-packages
}
python3 -c "import macaroonbakery, pymacaroons, nacl" 2>/dev/null || pip_install tests/candid/requirements.txt
python3 -c "import pylxd, ws4py" 2>/dev/null || pip_install tests/pylxd/requirements.txt

# A CI run builds once: incremental state would only fill its disk (tens of GB across the
# clippy, build and test profiles).
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
command -v cargo >/dev/null || { echo "cargo not found: install rustup (rust-toolchain.toml pins the compiler)" >&2; exit 1; }
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --locked --features rxd/failpoints -- -D warnings
# The dependency policy (deny.toml): rustls, rusqlite and libcontainer stay in their crates, and
# every license is one we accept. cargo-deny is built once per machine: about 4 CPU-minutes
# (13 minutes of wall time on two cores shared with other builds).
command -v cargo-deny >/dev/null || cargo install --locked cargo-deny
cargo deny --locked check bans licenses
# The tests run the real binaries (rxd, rxc, rxd-shim): build them all first, the daemon with
# its fail points compiled in (crates/rxd-daemon/src/failpoint.rs; never in a release build), so
# the crash-recovery tests can kill it at a named step.
cargo build --workspace --bins --locked --features rxd/failpoints
cargo test --workspace --locked --features rxd/failpoints
