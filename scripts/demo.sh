#!/usr/bin/env bash
# Install what is needed, build, and show rxd working: start rxd on a temporary state dir with
# HTTPS on loopback, enrol a second client with a join token and with the trust password, and
# show what an untrusted client sees. Everything stays on 127.0.0.1 and is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in openssl curl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust 1.85 or newer (rustup)" >&2; exit 1; }

cargo build --release --locked -p rxd -p rxc
bin=$PWD/target/release
work=$(mktemp -d /tmp/rxd-demo.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 8443)
"$bin/rxd" --dir "$work/state" --log warn 2>"$work/rxd.log" &
rxd_pid=$!
trap 'kill $rxd_pid 2>/dev/null; wait $rxd_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -S "$work/state/unix.socket" ] && break; sleep 0.05; done

export RXD_DIR=$work/state
admin() { RXC_CONF=$work/admin "$bin/rxc" "$@"; }
laptop() { RXC_CONF=$work/laptop "$bin/rxc" "$@"; }
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
RXC_CONF=$work/desk "$bin/rxc" remote add pw "127.0.0.1:$port" --accept-certificate --password demo-password
admin config unset core.trust_password
step "rxc config trust list"
admin config trust list
step "rxc remote list   # on the laptop"
laptop remote list
echo
echo "Containers (rxc launch) are not implemented yet; see the open issues."
