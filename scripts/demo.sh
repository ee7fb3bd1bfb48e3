#!/usr/bin/env bash
# Install what is needed, build, and show rxd working: start rxd on a temporary state dir with
# HTTPS on loopback, enrol a second client with a join token and with the trust password, show
# what an untrusted client sees, then launch an unprivileged container from that remote client.
# Everything stays on 127.0.0.1 and is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# libseccomp-dev and pkg-config build the container helper's seccomp support, libclang-dev
# btrfs-uapi's ioctl bindings; busybox-static fills the demo image.
for pkg in openssl curl libseccomp-dev pkg-config libclang-dev busybox-static; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install rustup (rust-toolchain.toml pins the compiler)" >&2; exit 1; }

bash scripts/build-release.sh
bin=$PWD/target/release client=$PWD/target/client
work=$(mktemp -d /tmp/rxd-demo.XXXXXX)
# Like /var/lib, traversable: an unprivileged container's root must reach its root filesystem.
chmod 0711 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 8443)
"$bin/rxd" --dir "$work/state" --log warn 2>"$work/rxd.log" &
rxd_pid=$!
cleanup() {
  # Containers outlive rxd by design: stop the demo's before removing its state.
  for c in "$work"/state/runtime/state/*; do
    [ -e "$c" ] && "$bin/rxd-shim" --root "$work/state/runtime/state" delete "$(basename "$c")" || true
  done
  kill $rxd_pid 2>/dev/null; wait $rxd_pid 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do [ -S "$work/state/unix.socket" ] && break; sleep 0.05; done

export RXD_DIR=$work/state
admin() { RXC_CONF=$work/admin "$client/rxc" "$@"; }
laptop() { RXC_CONF=$work/laptop "$client/rxc" "$@"; }
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step "rxc config set core.https_address 127.0.0.1:$port   # (local socket: full trust)"
admin config set core.https_address "127.0.0.1:$port"
step "rxc info | grep certificate_fingerprint"
admin info | grep certificate_fingerprint
step "curl -sk https://127.0.0.1:$port/1.0   # what an untrusted client sees"
curl -sk "https://127.0.0.1:$port/1.0"; echo
step "rxc config trust add --name laptop   # a single-use join token"
token=$(admin config trust add --name laptop | tail -n 1)
echo "$token"
step "(on the laptop) rxc remote add demo <token>"
laptop remote add demo "$token"
step "(on the laptop) rxc info demo: | grep -E '^auth'"
laptop info demo: | grep -E '^auth'
step "rxc config set core.trust_password ...; rxc remote add pw 127.0.0.1:$port --accept-certificate --password ..."
admin config set core.trust_password demo-password
RXC_CONF=$work/desk "$client/rxc" remote add pw "127.0.0.1:$port" --accept-certificate --password demo-password
admin config unset core.trust_password
step "rxc config trust list"
admin config trust list
step "rxc remote list   # on the laptop"
laptop remote list

step "bash scripts/make-busybox-image.sh bb.tar.gz; rxc image import bb.tar.gz demo: --alias bb   # on the laptop, over HTTPS"
bash scripts/make-busybox-image.sh "$work/bb.tar.gz" >/dev/null
laptop image import "$work/bb.tar.gz" demo: --alias bb
step "rxc launch demo:bb demo:c1 && rxc list demo:"
laptop launch demo:bb demo:c1
laptop list demo:
step "rxc info demo:c1"
laptop info demo:c1
pid=$(laptop query demo:/1.0/instances/c1/state | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
step "cat /proc/$pid/uid_map; grep Uid /proc/$pid/status   # on the host: container root is an ordinary user"
cat "/proc/$pid/uid_map"
grep Uid "/proc/$pid/status"
step "rxc stop demo:c1 && rxc delete demo:c1"
laptop stop demo:c1
laptop delete demo:c1
laptop list demo:
