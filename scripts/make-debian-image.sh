#!/usr/bin/env bash
# Build the Debian 12 (bookworm) systemd test image as an LXD unified image (metadata.yaml +
# rootfs/), with mmdebstrap from the mirror apt uses here, and cache it: the tests and the
# benchmarks import it with `rxc image import OUT --alias d12`.
#
# Usage: make-debian-image.sh OUT.tar.gz
# OUT is rebuilt only when missing or when what it is built from (this script, the mirror) changed:
# the key is kept next to it in OUT.key.
set -euo pipefail
out=${1:?usage: make-debian-image.sh OUT.tar.gz}
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

packages=systemd-sysv,iproute2,ifupdown,isc-dhcp-client,netbase,procps
suite=bookworm

# The mirror apt uses: the first URI of the deb822 sources, else of sources.list.
mirror=
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources | grep -v security | head -n1)
fi
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
  mirror=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' /etc/apt/sources.list | grep -v security | head -n1)
fi
mirror=${mirror:-http://deb.debian.org/debian}

key=$( { cat "$0"; echo "$mirror $suite $packages $(uname -m)"; } | sha256sum | cut -d' ' -f1)
if [ -s "$out" ] && [ "$(cat "$out.key" 2>/dev/null)" = "$key" ]; then
  echo "$out (cached)"
  exit 0
fi

if ! command -v mmdebstrap >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
  fi
fi
command -v mmdebstrap >/dev/null || { echo "no mmdebstrap: apt-get install -y mmdebstrap" >&2; exit 1; }

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$(dirname "$out")/.debian-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
# No network configuration beyond loopback (netbase/ifupdown's default): rxd gives a container
# no interface to configure, and LXD's own images add theirs through templates. No
# /etc/hostname either (mmdebstrap copies the build host's): systemd then keeps the host name
# the container was started with, its instance name.
mmdebstrap --quiet --variant=minbase --include="$packages" \
  --customize-hook='rm -f "$1/etc/hostname" "$1/etc/resolv.conf"' \
  "$suite" "$root" "$mirror"

cat >"$work/metadata.yaml" <<META
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  architecture: $(dpkg --print-architecture)
  description: "Debian 12 (bookworm) minbase with systemd"
  os: debian
  release: bookworm
  variant: default
META
tar --numeric-owner --xattrs --xattrs-include='security.capability' -C "$work" -czf "$out.tmp" metadata.yaml rootfs
mv "$out.tmp" "$out"
echo "$key" >"$out.key"
echo "$out $(sha256sum "$out" | cut -d' ' -f1)"
