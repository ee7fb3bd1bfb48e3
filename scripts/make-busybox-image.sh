#!/usr/bin/env bash
# Build a small LXD unified image (metadata.yaml + rootfs/) from Debian's static busybox, for the
# tests and the demo: rxc image import OUT --alias bb
set -euo pipefail
out=${1:?usage: make-busybox-image.sh OUT.tar.gz}
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

bb=/bin/busybox
if ! [ -x "$bb" ] || ! "$bb" --list >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
  fi
fi
[ -x "$bb" ] || { echo "no $bb: apt-get install -y busybox-static" >&2; exit 1; }
# A dynamically linked busybox would find no libraries inside the container.
if command -v ldd >/dev/null && ldd "$bb" 2>/dev/null | grep -q '=>'; then
  echo "$bb is not statically linked: apt-get install -y busybox-static" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,sbin,etc,dev,proc,sys,tmp,root,run,var,usr/bin,usr/sbin}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
cp "$bb" "$root/bin/busybox"
for applet in $("$bb" --list); do
  [ "$applet" = busybox ] && continue
  ln -s busybox "$root/bin/$applet"
done
ln -sf ../bin/busybox "$root/sbin/init"
# With a NIC, DHCP as a distribution does it: udhcpc stays in the foreground under init,
# renewing its lease, and configures eth0 through the script below.
printf '%s\n' '::sysinit:/bin/true' \
  "::once:/bin/sh -c 'ip link show eth0 >/dev/null 2>&1 && exec udhcpc -f -S -i eth0 -s /usr/share/udhcpc/default.script'" \
  '::restart:/sbin/init' '::shutdown:/bin/true' >"$root/etc/inittab"
mkdir -p "$root/usr/share/udhcpc"
cat >"$root/usr/share/udhcpc/default.script" <<'SCRIPT'
#!/bin/sh
# udhcpc's hook: address, default route and resolver from the lease.
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    : >/etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
    for s in $dns; do echo "nameserver $s" >>/etc/resolv.conf; done ;;
esac
exit 0
SCRIPT
chmod 0755 "$root/usr/share/udhcpc/default.script"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
# sed reads all of busybox's output: `head` would close the pipe early, and under pipefail the
# SIGPIPE busybox then gets fails the build now and then.
version=$("$bb" | sed -n '1s/^BusyBox v\([0-9.]*\).*/\1/p')
cat >"$work/metadata.yaml" <<META
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  description: "busybox ${version:-unknown}"
  os: busybox
  release: "${version:-unknown}"
META
tar --numeric-owner --owner=0 --group=0 -C "$work" -czf "$out" metadata.yaml rootfs
echo "$out $(sha256sum "$out" | cut -d' ' -f1)"
