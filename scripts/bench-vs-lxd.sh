#!/usr/bin/env bash
# rxd against LXD 5.0 (Debian's packages) on this machine, in one run: both on temporary state
# dirs with HTTPS on loopback, the same busybox image and the same trusted client certificate;
# the workloads alternate between the two servers round by round so machine noise hits both.
# Prints the medians and the ratios rxd/LXD; the reports stay in the printed work directory.
#
#   bash scripts/bench-vs-lxd.sh            # ROUNDS=3 SECONDS_PER=5 STARTS=5 CERTS=100000 FLOOD=4200
#
# Run as root on Debian 12. LXD gets a `dir` pool, no network bridge, and no outgoing fetches:
# its background downloads (instance types, image refreshes) are sent to a dead proxy on
# loopback and image auto-update is off. The bridged part (ONLY=network runs it alone) is the
# exception: there each server runs in a network namespace of its own, with a managed bridge.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-5}
STARTS=${STARTS:-5}
CERTS=${CERTS:-100000}
INSTANCES=${INSTANCES:-100}
CONTAINERS=${CONTAINERS:-5}
# Idle connections 127.0.0.2 holds open while the trusted client (127.0.0.1) measures its latency.
FLOOD=${FLOOD:-4200}
# Rounds of the Debian 12 systemd image: import, launch to `running`, clean stop.
DEBIAN_ROUNDS=${DEBIAN_ROUNDS:-3}
# Rounds of a container with one NIC on a managed bridge: start, and start to a DHCPv4 lease
# (state read every NET_POLL_MS between reads).
NET_ROUNDS=${NET_ROUNDS:-5}
NET_POLL_MS=${NET_POLL_MS:-15}
# Rounds of the storage part: both servers with a btrfs pool on one loop-file filesystem.
STORAGE_ROUNDS=${STORAGE_ROUNDS:-5}
# ONLY=debian runs the Debian part alone (both servers set up, nothing else measured);
# ONLY=storage the storage part alone; ONLY=network the bridged part alone.
ONLY=${ONLY:-}

need=()
for pkg in lxd lxd-client busybox-static xz-utils mmdebstrap bc dnsmasq-base nftables iproute2 btrfs-progs libseccomp-dev pkg-config libclang-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
bash scripts/build-release.sh
bin=$PWD/target/release client=$PWD/target/client
# Built (or taken from the cache) before LXD's dead proxy below is exported: mmdebstrap's apt
# would send its fetches there too.
debian=target/debian-image/debian12.tar.gz
bash scripts/make-debian-image.sh "$debian" >/dev/null
# How much of the start-up layout (crates/rxd/build.rs) this build matches: names carry hashes
# of the build's configuration, and a stale list silently lays out less.
listed=$(sort -u crates/rxd/startup.order | wc -l)
found=$(nm "$bin/rxd" | awk '{print $NF}' | sort -u | comm -12 - <(sort -u crates/rxd/startup.order) | wc -l)
echo "start-up layout: $found of $listed listed functions found in rxd"
# A fresh list matches about 89% (the rest are libc's names); one at 79% cost 1.8 MiB idle.
if ((found * 100 < listed * 85)); then
  echo "warning: crates/rxd/startup.order is stale; run scripts/startup-order.sh" >&2
fi

# Nothing leaves the machine: LXD's fetches go to a closed port on loopback.
export http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9
export HTTP_PROXY=$http_proxy HTTPS_PROXY=$https_proxy no_proxy=127.0.0.1,localhost,::1 NO_PROXY=127.0.0.1,localhost,::1

work=$(mktemp -d /tmp/rxd-vs-lxd.XXXXXX)
chmod 711 "$work"
pids=()
# LXD's monitor makes an `lxc.pivot` cgroup in every hierarchy and never removes it: the ones
# this run makes are removed at the end (empty by then), those that were there are left.
pivots_before=$(ls -d /sys/fs/cgroup/*/lxc.pivot 2>/dev/null || true)
cleanup() {
  # Clean-up goes on past a failed step.
  set +eu
  if declare -F net_abort >/dev/null; then net_abort; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # The storage part's btrfs (its loop device goes with the mount: autoclear).
  if [[ -d $work/btrfs ]] && mountpoint -q "$work/btrfs"; then umount -l "$work/btrfs"; fi
  local pivot
  for pivot in /sys/fs/cgroup/*/lxc.pivot; do
    [[ -d $pivot ]] || continue
    grep -qxF "$pivot" <<<"$pivots_before" || rmdir "$pivot" 2>/dev/null || true
  done
}
trap cleanup EXIT

"$bin/rxd-bench" keygen "$work/client"
bash scripts/make-busybox-image.sh "$work/bb.tar.gz" >/dev/null

wait_socket() { # SOCKET
  for _ in $(seq 600); do
    curl -s --unix-socket "$1" http://x/1.0 >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "no answer on $1" >&2
  return 1
}

start_lxd() { # DIR
  LXD_DIR=$1 lxd --logfile "$1.log" &
  LXD_PID=$!
  pids+=("$LXD_PID")
  LXD_DIR=$1 lxd waitready --timeout 120
}
start_rxd() { # DIR
  "$bin/rxd" --dir "$1" --log warn 2>"$1.log" &
  RXD_PID=$!
  pids+=("$RXD_PID")
  wait_socket "$1/unix.socket"
}
stop() { # PID
  kill "$1"
  while kill -0 "$1" 2>/dev/null; do sleep 0.1; done
}

# --- Bridged NICs -------------------------------------------------------------------------------
# Each server runs in a network namespace this script makes (rxdb-<pid>-rxd, rxdb-<pid>-lxd), so
# the bridges, veths, dnsmasq, nftables tables and sysctls they make land there and never in the
# host's namespace. A daemon starts as crates/rxd-testkit/src/netlab.rs starts rxd: in the
# namespace (`ip netns exec`), then in a private mount namespace of its own (`unshare`) where
# /sys is mounted again, so /sys/class/net lists the namespace's links, and under it every
# cgroup hierarchy this script sees, with the same options, so both find their cgroups as on the
# host. Each step execs the next, so `$!` is the daemon's pid; the mounts vanish with the last
# process in that mount namespace. The clients (rxc, lxc, rxd-bench) stay in the host's
# namespace: a unix socket's path reaches across.
NET_SUBNET=10.97.0.1/24
declare -A net_ns net_dir net_pid net_mnt net_bridge

sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; } # single-quoted for sh
# The wrapper's shell lines: /sys again, a 0755 tmpfs on /sys/fs/cgroup unless cgroup2 itself
# is mounted there, then each cgroup mount of /proc/self/mounts (`\040` is a space there).
# `ip netns exec` has already put the namespace's sysfs on /sys (the host's detached, and its
# cgroup mounts with it), and a second mount of that sysfs on the same point is refused as
# already mounted: it is detached first, so /sys is surely this namespace's, fresh.
remount_lines() {
  local point fstype options lines=() tmpfs=1
  while read -r _ point fstype options _; do
    [[ $fstype == cgroup || $fstype == cgroup2 ]] || continue
    point=$(printf '%b' "${point//\\/\\0}")
    [[ $point == /sys/fs/cgroup || $point == /sys/fs/cgroup/* ]] || continue
    if [[ $point == /sys/fs/cgroup ]]; then tmpfs=0; else lines+=("mkdir -p $(sq "$point")"); fi
    lines+=("mount -t $fstype -o $(sq "$options") $fstype $(sq "$point")")
  done </proc/self/mounts
  echo "umount -l /sys"
  echo "mount -t sysfs sysfs /sys"
  if ((tmpfs)); then echo "mount -t tmpfs -o mode=0755 tmpfs /sys/fs/cgroup"; fi
  printf '%s\n' "${lines[@]}"
}

ncli() { # LABEL ARGS...: the label's CLI on its namespaced daemon
  local label=$1; shift
  if [[ $label == lxd ]]; then LXD_DIR=${net_dir[lxd]} timeout 120 lxc "$@"
  else RXD_DIR=${net_dir[rxd]} RXC_CONF=$work/rxc-net timeout 120 "$client/rxc" "$@"; fi
}

# The label's namespace, its daemon in it, a managed bridge with a fixed subnet and no IPv6 (the
# same in both namespaces), eth0 on it in the default profile, the busybox image.
net_up() { # LABEL
  local label=$1 ns dir wrap mnt
  ns=rxdb-$$-$label dir=$work/net-$label
  wrap=(unshare --mount --propagation private sh -c "set -e
$(remount_lines)
exec \"\$@\"" "netbench-$label")
  ip netns add "$ns"
  net_ns[$label]=$ns
  ip -n "$ns" link set lo up
  mkdir -p "$dir" && chmod 711 "$dir"
  net_dir[$label]=$dir
  if [[ $label == lxd ]]; then
    LXD_DIR=$dir ip netns exec "$ns" "${wrap[@]}" lxd --logfile "$dir.log" &
    net_pid[$label]=$!
    LXD_DIR=$dir lxd waitready --timeout 120
    net_bridge[$label]=lxdbr0
    LXD_DIR=$dir lxd init --preseed <<'EOF'
config:
  images.auto_update_interval: "0"
storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  devices:
    root:
      path: /
      pool: default
      type: disk
EOF
  else
    ip netns exec "$ns" "${wrap[@]}" "$bin/rxd" --dir "$dir" --log warn 2>"$dir.log" &
    net_pid[$label]=$!
    wait_socket "$dir/unix.socket"
    net_bridge[$label]=br0
  fi
  # The daemon answers, so it runs in its private mount namespace by now; were it still the
  # host's, the sweep would kill far too much, so that is refused.
  mnt=$(readlink "/proc/${net_pid[$label]}/ns/mnt")
  if [[ $mnt == "$(readlink /proc/$$/ns/mnt)" ]]; then
    echo "$label is in the host's mount namespace" >&2
    return 1
  fi
  net_mnt[$label]=$mnt
  ncli "$label" network create "${net_bridge[$label]}" \
    ipv4.address=$NET_SUBNET ipv4.nat=true ipv6.address=none >/dev/null
  ncli "$label" profile device add default eth0 nic network="${net_bridge[$label]}" name=eth0 >/dev/null
  ncli "$label" image import "$work/bb.tar.gz" --alias bb >/dev/null
  echo "$label in $ns: pid ${net_pid[$label]}, ${net_bridge[$label]} $NET_SUBNET"
}

# Through the daemon: the NIC and the bridge removed (its dnsmasq and nftables tables go with
# it); then the daemon stopped, and its namespaces cleared.
net_down() { # LABEL
  local label=$1
  ncli "$label" profile device remove default eth0 >/dev/null
  ncli "$label" network delete "${net_bridge[$label]}" >/dev/null
  stop "${net_pid[$label]}"
  unset "net_pid[$label]"
  net_clear "$label"
}

# After a failure: the round's container, the NIC and the bridge, as far as the daemons still
# answer; then the daemons stopped and their namespaces cleared.
net_abort() {
  local label
  for label in "${!net_pid[@]}"; do
    ncli "$label" delete --force bench-net >/dev/null 2>&1 || true
    ncli "$label" profile device remove default eth0 >/dev/null 2>&1 || true
    ncli "$label" network delete "${net_bridge[$label]:-}" >/dev/null 2>&1 || true
    kill "${net_pid[$label]}" 2>/dev/null || true
    while kill -0 "${net_pid[$label]}" 2>/dev/null; do sleep 0.1; done
    unset "net_pid[$label]"
  done
  for label in "${!net_ns[@]}"; do net_clear "$label" || true; done
}

# Whatever still runs in the label's network namespace or in its daemon's mount namespace (only
# this script put processes there: a dnsmasq or an LXD monitor left behind) is killed by pid;
# then the network namespace is deleted.
net_clear() { # LABEL
  local label=$1 ns=${net_ns[$1]} mnt=${net_mnt[$1]:-} p left
  for _ in 1 2 3 4 5; do
    left=($(ip netns pids "$ns" 2>/dev/null || true))
    if [[ -n $mnt ]]; then
      for p in /proc/[0-9]*; do
        [[ $(readlink "$p/ns/mnt" 2>/dev/null) == "$mnt" ]] && left+=("${p#/proc/}")
      done
    fi
    ((${#left[@]})) || break
    echo "$label: killing leftover processes ${left[*]}" >&2
    kill -9 "${left[@]}" 2>/dev/null || true
    sleep 0.5
  done
  ip netns del "$ns" || echo "$label: ip netns del $ns failed" >&2
  unset "net_ns[$label]" "net_mnt[$label]"
}

# What the host's own network is, to check that the bridged part left it as it was: links,
# addresses, routes, the nftables ruleset, the forwarding sysctls.
host_net() {
  ip -o link | sed 's/ link\/.*//'
  ip -o addr | sed 's/valid_lft.*//'
  ip route show table all
  ip -6 route show table all | sed 's/ expires [^ ]*//'
  nft list ruleset
  grep -H . /proc/sys/net/ipv4/conf/*/forwarding /proc/sys/net/ipv6/conf/*/forwarding
  ip netns list | grep -F "rxdb-$$-" || true
}

net_round() { # LABEL ROUND [OUT]
  "$bin/rxd-bench" bridged --label "$1" --socket "${net_dir[$1]}/unix.socket" \
    --rounds 1 --poll-ms "$NET_POLL_MS" --out "${3:-$work/$1-bridged-$2.json}"
}
bridged_part() {
  local before round
  before=$(host_net)
  echo "== bridged NIC: start, and start to a DHCPv4 lease, $NET_ROUNDS rounds (+1 warm-up)"
  net_up lxd
  net_up rxd
  # A first start each, not counted: images unpacked, binaries and libraries read from disk.
  net_round lxd 0 "$work/warmup-lxd-bridged.json"
  net_round rxd 0 "$work/warmup-rxd-bridged.json"
  for round in $(seq "$NET_ROUNDS"); do
    if ((round % 2)); then net_round lxd "$round"; net_round rxd "$round"
    else net_round rxd "$round"; net_round lxd "$round"; fi
  done
  net_down lxd
  net_down rxd
  if [[ $(host_net) != "$before" ]]; then
    echo "the host's network changed during the bridged part:" >&2
    diff <(echo "$before") <(host_net) >&2 || true
    return 1
  fi
}

if [[ $ONLY == network ]]; then
  bridged_part
  echo "== LXD $(lxd --version) vs rxd $("$bin/rxd" --version 2>/dev/null | awk '{print $2}')"
  "$bin/rxd-bench" compare --a "$work"/rxd-bridged-*.json --b "$work"/lxd-bridged-*.json \
    --out "$work/compare-bridged.json"
  echo "== reports in $work"
  exit 0
fi

echo "== setting up LXD and rxd in $work"
mkdir -p "$work/lxd" && chmod 711 "$work/lxd"
start_lxd "$work/lxd"
LXD_DIR=$work/lxd lxd init --preseed <<'EOF'
config:
  core.https_address: 127.0.0.1:18443
  images.auto_update_interval: "0"
storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  devices:
    root:
      path: /
      pool: default
      type: disk
EOF
LXD_DIR=$work/lxd lxc config trust add "$work/client/client.crt"
LXD_DIR=$work/lxd lxc image import "$work/bb.tar.gz" --alias bb >/dev/null

start_rxd "$work/rxd"
rxc() { RXD_DIR=$work/rxd RXC_CONF=$work/rxc "$client/rxc" "$@"; }
rxc config set core.https_address 127.0.0.1:18444
rxc config trust add "$work/client/client.crt"
rxc image import "$work/bb.tar.gz" --alias bb >/dev/null

server() { # LABEL ROUND
  local label=$1 round=$2
  if [[ $label == lxd ]]; then
    "$bin/rxd-bench" server --label lxd --https 127.0.0.1:18443 --socket "$work/lxd/unix.socket" \
      --client "$work/client" --server-cert "$work/lxd/server.crt" --pid "$LXD_PID" \
      --seconds "$SECONDS_PER" --instances "$INSTANCES" --containers "$CONTAINERS" \
      --flood "$FLOOD" --out "$work/lxd-server-$round.json"
  else
    "$bin/rxd-bench" server --label rxd --https 127.0.0.1:18444 --socket "$work/rxd/unix.socket" \
      --client "$work/client" --server-cert "$work/rxd/server.crt" --pid "$RXD_PID" \
      --seconds "$SECONDS_PER" --instances "$INSTANCES" --containers "$CONTAINERS" \
      --flood "$FLOOD" --out "$work/rxd-server-$round.json"
  fi
}
if [[ -z $ONLY ]]; then
  for round in $(seq "$ROUNDS"); do
    echo "== round $round of $ROUNDS"
    if ((round % 2)); then server lxd "$round"; server rxd "$round"; else server rxd "$round"; server lxd "$round"; fi
  done
fi

# The Debian 12 systemd image (scripts/make-debian-image.sh, cached under target/): import, launch
# until `systemctl is-system-running` answers running or degraded, clean stop (SIGRTMIN+3, no
# kill), delete; alternating servers round by round. Wall-clock seconds of each step.
# Times are read from bash's clock ($EPOCHREALTIME) right before and after a step: a `date`
# process at each end added its own start and exit (1 to 2 ms) to every figure, on both sides.
export LC_NUMERIC=C
since() { echo "$EPOCHREALTIME - $1" | bc; }
timed() { # LABEL STEP ARGS...: the seconds `cli LABEL ARGS...` takes, as "LABEL STEP SECONDS"
  local label=$1 step=$2 t t1
  shift 2
  t=$EPOCHREALTIME
  cli "$label" "$@" >/dev/null
  t1=$EPOCHREALTIME
  echo "$label $step $(echo "$t1 - $t" | bc)"
}
cli() { # LABEL ARGS...
  local label=$1; shift
  if [[ $label == lxd ]]; then LXD_DIR=$work/lxd lxc "$@"; else rxc "$@"; fi
}
debian_round() { # LABEL ROUND
  local label=$1 round=$2 t name=d$2
  timed "$label" import image import "$debian" --alias d12
  t=$EPOCHREALTIME
  cli "$label" launch d12 "$name" >/dev/null
  echo "$label launch $(since "$t")"
  until state=$(cli "$label" exec "$name" -- systemctl is-system-running 2>/dev/null); [[ $state == running || $state == degraded ]]; do
    sleep 0.05
  done
  echo "$label launch-to-running $(since "$t")"
  timed "$label" stop stop "$name"
  cli "$label" delete "$name" >/dev/null
  cli "$label" image delete d12 >/dev/null
}
# Storage: both servers get a btrfs pool in a directory of their own on one btrfs filesystem
# (a sparse loop file, mounted as LXD mounts its loop pools), so the same disk and the same
# filesystem serve both. Wall-clock seconds of: a busybox create; a Debian create and launch
# (image unpacked into the pool by the untimed first create); a snapshot of the running Debian
# container; a copy of it, stopped.
storage_part() {
  truncate -s 30G "$work/btrfs.img"
  mkfs.btrfs -q "$work/btrfs.img"
  mkdir -p "$work/btrfs"
  mount -o loop,user_subvol_rm_allowed "$work/btrfs.img" "$work/btrfs"
  # LXD makes its source a subvolume itself (the path must not exist); rxd takes an empty
  # directory.
  mkdir "$work/btrfs/rxd"
  LXD_DIR=$work/lxd lxc storage create bt btrfs source="$work/btrfs/lxd" >/dev/null
  rxc storage create bt btrfs source="$work/btrfs/rxd" >/dev/null
  local label
  for label in lxd rxd; do
    cli "$label" image import "$debian" --alias d12s >/dev/null
    cli "$label" init d12s warm -s bt >/dev/null
    cli "$label" delete warm >/dev/null
  done
  # Each server's round starts on a settled filesystem: the subvolumes the other server (or
  # this one) deleted in the round before are cleaned by btrfs's cleaner thread in the
  # background, and the next transaction commit (every snapshot makes one) carries what that
  # cleaning left, so one server's first step would pay for the other's deletes. Waiting for
  # the cleaner (`subvolume sync`) and then committing (`sync -f`) leaves both an idle
  # filesystem; waiting without the commit makes the next snapshot pay it all at once.
  storage_round() { # LABEL ROUND
    local label=$1 round=$2
    btrfs subvolume sync "$work/btrfs" >/dev/null
    sync -f "$work/btrfs"
    timed "$label" busybox-create init bb "b$round" -s bt
    timed "$label" debian-create init d12s "c$round" -s bt
    timed "$label" debian-launch launch d12s "d$round" -s bt
    timed "$label" snapshot-running snapshot "d$round" s0
    cli "$label" stop "d$round" --force >/dev/null
    timed "$label" copy copy "d$round" "e$round"
    cli "$label" delete "b$round" "c$round" "d$round" "e$round" >/dev/null
  }
  echo "== storage (btrfs pools on one loop-file filesystem), $STORAGE_ROUNDS rounds"
  local round
  for round in $(seq "$STORAGE_ROUNDS"); do
    if ((round % 2)); then storage_round lxd "$round"; storage_round rxd "$round"
    else storage_round rxd "$round"; storage_round lxd "$round"; fi
  done | tee "$work/storage.txt"
  # ratio: the medians' quotient. paired: the median of each round's rxd/LXD, the two servers
  # measured one after the other, which a slow stretch of the machine (both servers' steps
  # slow for a few rounds) moves less.
  echo "== storage medians (seconds) and rxd/LXD"
  local step
  for step in busybox-create debian-create debian-launch snapshot-running copy; do
    med() { awk -v l="$1" -v s="$step" '$1 == l && $2 == s {print $3}' "$work/storage.txt" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    r=$(med rxd) l=$(med lxd)
    p=$(awk -v s="$step" '$2 == s { n[$1]++; v[$1, n[$1]] = $3 }
      END { for (i = 1; i <= n["rxd"] && i <= n["lxd"]; i++) print v["rxd", i] / v["lxd", i] }' \
      "$work/storage.txt" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '%-18s rxd %6.3f  LXD %6.3f  ratio %.3f  paired %.3f\n' "$step" "$r" "$l" "$(echo "$r / $l" | bc -l)" "$p"
  done
  for label in lxd rxd; do cli "$label" image delete d12s >/dev/null; done
  LXD_DIR=$work/lxd lxc storage delete bt >/dev/null
  rxc storage delete bt >/dev/null
  umount "$work/btrfs"
}
if [[ $ONLY == storage ]]; then
  storage_part
  stop "$LXD_PID"
  stop "$RXD_PID"
  exit 0
fi

echo "== Debian 12 (systemd), $DEBIAN_ROUNDS rounds"
for round in $(seq "$DEBIAN_ROUNDS"); do
  if ((round % 2)); then debian_round lxd "$round"; debian_round rxd "$round"
  else debian_round rxd "$round"; debian_round lxd "$round"; fi
done | tee "$work/debian.txt"
echo "== Debian 12 medians (seconds) and rxd/LXD"
for step in import launch launch-to-running stop; do
  med() { awk -v l="$1" -v s="$step" '$1 == l && $2 == s {print $3}' "$work/debian.txt" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  r=$(med rxd) l=$(med lxd)
  printf '%-18s rxd %6.2f  LXD %6.2f  ratio %.2f\n' "$step" "$r" "$l" "$(echo "$r / $l" | bc -l)"
done
[[ $ONLY == debian ]] || storage_part
stop "$LXD_PID"
stop "$RXD_PID"
[[ $ONLY == debian ]] && exit 0

# Start-up and idle memory: a state holding nothing, and one trusting $CERTS certificates.
echo "== start-up, empty and with $CERTS trusted certificates"
for tag in empty certs; do
  mkdir -p "$work/lxd-$tag" && chmod 711 "$work/lxd-$tag"
  start_lxd "$work/lxd-$tag"
  if [[ $tag == certs ]]; then
    python3 scripts/lxd-seed-certs.py "$CERTS" "$work/client/client.crt" |
      LXD_DIR=$work/lxd-$tag lxd sql global - >/dev/null
  fi
  stop "$LXD_PID"
  start_rxd "$work/rxd-$tag"
  stop "$RXD_PID"
  if [[ $tag == certs ]]; then "$bin/rxd-bench" seed-rxd --dir "$work/rxd-$tag" --count "$CERTS"; fi
done
startup() { # LABEL TAG ROUND
  local label=$1 tag=$2 round=$3 name=$2
  [[ $tag == certs ]] && name=certs100k
  if [[ $label == lxd ]]; then
    "$bin/rxd-bench" startup --label lxd --tag "$name" --socket "$work/lxd-$tag/unix.socket" \
      --rounds 1 --out "$work/lxd-startup-$tag-$round.json" -- \
      env LXD_DIR="$work/lxd-$tag" lxd --logfile "$work/lxd-$tag.log"
  else
    "$bin/rxd-bench" startup --label rxd --tag "$name" --socket "$work/rxd-$tag/unix.socket" \
      --rounds 1 --out "$work/rxd-startup-$tag-$round.json" -- \
      "$bin/rxd" --dir "$work/rxd-$tag" --log warn
  fi
}
for round in $(seq "$STARTS"); do
  for tag in empty certs; do
    if ((round % 2)); then startup lxd $tag "$round"; startup rxd $tag "$round"
    else startup rxd $tag "$round"; startup lxd $tag "$round"; fi
  done
done

bridged_part

echo "== $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(date -u +%F)"
echo "== LXD $(LXD_DIR=$work/lxd lxd --version) vs rxd $("$bin/rxd" --version 2>/dev/null | awk '{print $2}')"
"$bin/rxd-bench" compare --a "$work"/rxd-*.json --b "$work"/lxd-*.json --out "$work/compare.json"
echo "== reports in $work"
